package clientip

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func req(remote string, xff ...string) *http.Request {
	r, _ := http.NewRequest("GET", "http://edge/", nil)
	r.RemoteAddr = remote
	for _, v := range xff {
		r.Header.Add("X-Forwarded-For", v)
	}
	return r
}

func TestAddr(t *testing.T) {
	tests := []struct {
		name    string
		hops    int
		remote  string
		xff     []string
		want    string
		trusted bool
	}{
		{"no proxy: socket peer", 0, "192.0.2.1:5000", []string{"203.0.113.9"}, "192.0.2.1", true},
		{"no proxy, unix socket", 0, "@", nil, "@", true},
		{"cloud run: the one entry", 1, "169.254.1.1:1", []string{"203.0.113.9"}, "203.0.113.9", true},
		{"cloud run: client prepends a lie", 1, "169.254.1.1:1", []string{"10.9.9.9, 203.0.113.9"}, "203.0.113.9", true},
		{"cloud run: lie in an earlier header line", 1, "169.254.1.1:1", []string{"10.9.9.9", "203.0.113.9"}, "203.0.113.9", true},
		{"load balancer: client then balancer", 2, "169.254.1.1:1", []string{"1.1.1.1,203.0.113.9, 34.120.0.1"}, "203.0.113.9", true},
		{"load balancer: two lines", 2, "169.254.1.1:1", []string{"203.0.113.9", "34.120.0.1"}, "203.0.113.9", true},
		{"ipv6 with port", 1, "169.254.1.1:1", []string{"[2001:db8::1]:443"}, "2001:db8::1", true},
		{"ipv4 with port", 1, "169.254.1.1:1", []string{"203.0.113.9:1234"}, "203.0.113.9", true},
		{"ipv4-mapped ipv6", 1, "169.254.1.1:1", []string{"::ffff:203.0.113.9"}, "203.0.113.9", true},
		{"too few entries: socket peer", 2, "169.254.1.1:1", []string{"203.0.113.9"}, "169.254.1.1", false},
		{"no header: socket peer", 1, "169.254.1.1:1", nil, "169.254.1.1", false},
		{"garbage at the trusted place", 1, "169.254.1.1:1", []string{"1.2.3.4, not-an-ip"}, "169.254.1.1", false},
		{"empty trusted entry", 1, "169.254.1.1:1", []string{"1.2.3.4,"}, "169.254.1.1", false},
		{"zone refused", 1, "169.254.1.1:1", []string{"fe80::1%eth0"}, "169.254.1.1", false},
		{"obfuscated forms refused", 1, "169.254.1.1:1", []string{"unknown"}, "169.254.1.1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, trusted := Resolver{Hops: tc.hops}.Addr(req(tc.remote, tc.xff...))
			if got != tc.want || trusted != tc.trusted {
				t.Fatalf("Addr = %q, %v; want %q, %v", got, trusted, tc.want, tc.trusted)
			}
		})
	}
}

// FuzzAddr: whatever the header, the answer is the socket peer or a valid
// IP; and anything a client prepends cannot change a trusted answer.
func FuzzAddr(f *testing.F) {
	f.Add("203.0.113.9", "10.0.0.1", 1)
	f.Add("1.1.1.1, 203.0.113.9, 34.120.0.1", "x", 2)
	f.Add("[2001:db8::1]:443", ",,,", 1)
	f.Add("", "", 3)
	f.Add(",,", "::ffff:1.2.3.4", 2)
	f.Fuzz(func(t *testing.T, xff, prefix string, hops int) {
		hops = ((hops % MaxHops) + MaxHops) % MaxHops
		res := Resolver{Hops: hops}
		got, trusted := res.Addr(req("192.0.2.1:9", xff))
		if got != "192.0.2.1" {
			if _, err := netip.ParseAddr(got); err != nil || !trusted {
				t.Fatalf("Addr(%q, %d) = %q (trusted %v): neither the peer nor an IP", xff, hops, got, trusted)
			}
		}
		if !trusted || hops == 0 || strings.ContainsAny(prefix, "\r\n") {
			return
		}
		spoofed, trusted2 := res.Addr(req("192.0.2.1:9", prefix, xff))
		if spoofed != got || !trusted2 {
			t.Fatalf("prefix %q changed %q to %q", prefix, got, spoofed)
		}
		spoofed, _ = res.Addr(req("192.0.2.1:9", prefix+","+xff))
		if spoofed != got {
			t.Fatalf("inline prefix %q changed %q to %q", prefix, got, spoofed)
		}
	})
}
