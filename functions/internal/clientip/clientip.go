// Package clientip finds the client's address of a request that crossed a
// known number of trusted proxies. Each proxy appends the address it saw to
// X-Forwarded-For, so with N trusted hops the client is the N-th entry from
// the right; whatever a client put before that is its own claim and ignored.
package clientip

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// MaxHops bounds the configured hop count (no real chain is deeper).
const MaxHops = 16

// Resolver resolves client addresses behind Hops trusted proxies.
type Resolver struct {
	// Hops is how many trusted proxies append to X-Forwarded-For in front
	// of this server: 0 uses the socket's peer (no proxy), 1 Cloud Run's
	// front end, 2 a Google Cloud load balancer in front of Cloud Run.
	Hops int
}

// Addr returns the client address of r: the X-Forwarded-For entry the
// outermost trusted hop wrote, or the socket peer when Hops is 0. When the
// header holds fewer entries than Hops, or the trusted entry is not an IP
// address, the request did not come through the configured proxies as
// expected: the socket peer is returned and trusted reports false.
func (c Resolver) Addr(r *http.Request) (addr string, trusted bool) {
	peer := peerAddr(r.RemoteAddr)
	if c.Hops <= 0 {
		return peer, true
	}
	entry, ok := nthFromRight(r.Header.Values("X-Forwarded-For"), c.Hops)
	if !ok {
		return peer, false
	}
	ip, ok := parseEntry(entry)
	if !ok {
		return peer, false
	}
	return ip.String(), true
}

// nthFromRight returns the n-th comma-separated entry counted from the end
// of the header lines taken in order, without splitting what lies before.
func nthFromRight(lines []string, n int) (string, bool) {
	for i := len(lines) - 1; i >= 0; i-- {
		s := lines[i]
		for {
			j := strings.LastIndexByte(s, ',')
			entry := s[j+1:]
			if strings.TrimSpace(entry) != "" || j >= 0 {
				n--
				if n == 0 {
					return entry, true
				}
			}
			if j < 0 {
				break
			}
			s = s[:j]
		}
	}
	return "", false
}

// parseEntry reads one entry: an IPv4 or IPv6 address, optionally with a
// port ("203.0.113.1:443", "[2001:db8::1]:443"); zones are refused.
func parseEntry(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 64 {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(s)
		if err2 != nil {
			return netip.Addr{}, false
		}
		ip = ap.Addr()
	}
	if ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func peerAddr(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}
