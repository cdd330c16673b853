#!/usr/bin/env bash
# Supply-chain and static checks, run by .ci/run before the tests:
#   1. terraform fmt -check on terraform/ (Terraform built from its Go module)
#   2. govulncheck ./... against a vulnerability database built offline
#      from the golang.org/x/vulndb module (scripts/vulndb), failing on
#      findings in reachable code, with the database's date printed
#   3. staticcheck ./..., failing on any finding
# Tool binaries are cached in GOBIN and rebuilt only when their version
# differs; the database is cached per vulndb version. Bump the versions
# here (Dependabot cannot see them).
#   supply-chain.sh [fmt|vuln|static]...   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."

TERRAFORM_VERSION=v1.5.7
GOVULNCHECK_VERSION=v1.9.0
STATICCHECK_VERSION=v0.8.2
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
# The Go that release images are built with (Dockerfile GO_VERSION), and
# so the standard library govulncheck must judge. The machines' go1.26.8
# has 13 standard-library vulnerabilities reachable from lethe (net/http,
# crypto/tls, crypto/x509, html/template, ...), fixed in go1.26.9/1.26.10
# and go1.27.2/1.27.3; go1.27.3 is the newer Go the module proxy serves
# here, fetched by the go command itself (GOTOOLCHAIN).
RELEASE_GO=go1.27.3

GOBIN="$(go env GOBIN)"
[ -n "$GOBIN" ] || GOBIN="$(go env GOPATH)/bin"
export GOBIN
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/lethe"

# tool BIN MODULE PKG VERSION [GO]: install PKG@VERSION (built with Go
# GO, default the machine's) unless GOBIN/BIN was built from MODULE at
# VERSION with that Go.
tool() {
  local bin="$GOBIN/$1" mod=$2 pkg=$3 ver=$4 gov=${5:-} have="" want
  want="$ver ${gov:-$(go env GOVERSION)}"
  if [ -x "$bin" ]; then
    have=$(go version -m "$bin" 2>/dev/null | awk -v m="$mod" 'NR == 1 { g = $2 } $1 == "mod" && $2 == m { print $3 " " g }')
  fi
  if [ "$have" != "$want" ]; then
    echo "supply-chain: go install $pkg@$ver ${gov:+with $gov}" >&2
    local t0=$SECONDS
    GOTOOLCHAIN=${gov:-${GOTOOLCHAIN:-auto}} go install "$pkg@$ver"
    echo "supply-chain: built $1 in $((SECONDS - t0))s" >&2
  fi
}

fmt_check() {
  tool terraform github.com/hashicorp/terraform github.com/hashicorp/terraform "$TERRAFORM_VERSION"
  # validate needs the provider plugins, which these machines cannot
  # download; internal/tfpolicy checks the configuration instead. fmt and
  # version read no provider and no CLI configuration (none may exist).
  export TF_CLI_CONFIG_FILE=/dev/null
  echo "supply-chain: terraform fmt -check ($("$GOBIN/terraform" version | head -1))"
  "$GOBIN/terraform" fmt -check -diff -recursive terraform
  echo "supply-chain: terraform fmt: ok"
}

vuln_check() {
  # Built with the release Go too: it type-checks that Go's standard library.
  tool govulncheck golang.org/x/vuln golang.org/x/vuln/cmd/govulncheck "$GOVULNCHECK_VERSION" "$RELEASE_GO"
  local db="$CACHE/vulndb-$VULNDB_VERSION"
  if [ ! -s "$db/index/db.json" ]; then
    go run ./scripts/vulndb -module "golang.org/x/vulndb@$VULNDB_VERSION" -out "$db.tmp"
    rm -rf "$db" && mv "$db.tmp" "$db"
  fi
  local date
  date=$(sed -n 's/.*"modified":"\([^"]*\)".*/\1/p' "$db/index/db.json")
  echo "supply-chain: govulncheck $GOVULNCHECK_VERSION with $RELEASE_GO (the release image's Go), database golang.org/x/vulndb@$VULNDB_VERSION dated $date"
  # Exit status 3 means vulnerable code is reachable from lethe's code.
  if GOTOOLCHAIN=$RELEASE_GO "$GOBIN/govulncheck" -db "file://$db" ./...; then
    echo "supply-chain: govulncheck: no reachable vulnerabilities (database dated $date)"
  else
    echo "supply-chain: govulncheck FAILED (database dated $date)" >&2
    return 1
  fi
}

static_check() {
  tool staticcheck honnef.co/go/tools honnef.co/go/tools/cmd/staticcheck "$STATICCHECK_VERSION"
  echo "supply-chain: staticcheck $STATICCHECK_VERSION (default checks; exceptions are //lint:ignore lines with their reason)"
  "$GOBIN/staticcheck" ./...
  echo "supply-chain: staticcheck: ok"
}

[ $# -gt 0 ] || set -- fmt vuln static
for step in "$@"; do
  case "$step" in
    fmt) fmt_check ;;
    vuln) vuln_check ;;
    static) static_check ;;
    *) echo "supply-chain: unknown step $step (want fmt, vuln or static)" >&2; exit 2 ;;
  esac
done
