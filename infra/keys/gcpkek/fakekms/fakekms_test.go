package fakekms

import (
	"bytes"
	"context"
	"hash/crc32"
	"strings"
	"testing"

	kms "cloud.google.com/go/kms/apiv1"
	kmspb "cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// start runs a fake with keys a and b and returns the real Google client
// connected to it.
func start(t *testing.T) (*Server, *kms.KeyManagementClient, string, string) {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	base := "projects/p-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + "/locations/global/keyRings/r/cryptoKeys/"
	a, b := base+"a", base+"b"
	for _, k := range []string{a, b} {
		if err := s.CreateKey(k); err != nil {
			t.Fatal(err)
		}
	}
	c, err := kms.NewKeyManagementClient(context.Background(), s.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c, a, b
}

func sum(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))))
}

func encrypt(t *testing.T, c *kms.KeyManagementClient, name string, pt, ad []byte) *kmspb.EncryptResponse {
	t.Helper()
	resp, err := c.Encrypt(context.Background(), &kmspb.EncryptRequest{
		Name: name, Plaintext: pt, AdditionalAuthenticatedData: ad,
		PlaintextCrc32C: sum(pt), AdditionalAuthenticatedDataCrc32C: sum(ad),
	})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return resp
}

func TestEncryptResponse(t *testing.T) {
	_, c, a, _ := start(t)
	resp := encrypt(t, c, a, []byte("secret"), []byte("ad"))
	if resp.GetName() != a+"/cryptoKeyVersions/1" {
		t.Errorf("name %q, want the primary version of %q", resp.GetName(), a)
	}
	if !resp.GetVerifiedPlaintextCrc32C() || !resp.GetVerifiedAdditionalAuthenticatedDataCrc32C() {
		t.Error("checksums sent but not reported verified")
	}
	if resp.GetCiphertextCrc32C().GetValue() != sum(resp.GetCiphertext()).GetValue() {
		t.Error("ciphertext_crc32c does not match the ciphertext")
	}
	if bytes.Contains(resp.GetCiphertext(), []byte("secret")) {
		t.Error("ciphertext contains the plaintext")
	}
	// Without checksums the server must not claim to have verified them.
	bare, err := c.Encrypt(context.Background(), &kmspb.EncryptRequest{Name: a, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if bare.GetVerifiedPlaintextCrc32C() || bare.GetVerifiedAdditionalAuthenticatedDataCrc32C() {
		t.Error("verified_*_crc32c set for a request without checksums")
	}
	dec, err := c.Decrypt(context.Background(), &kmspb.DecryptRequest{Name: a, Ciphertext: resp.GetCiphertext(), AdditionalAuthenticatedData: []byte("ad")})
	if err != nil {
		t.Fatal(err)
	}
	if string(dec.GetPlaintext()) != "secret" || dec.GetPlaintextCrc32C().GetValue() != sum(dec.GetPlaintext()).GetValue() || !dec.GetUsedPrimary() {
		t.Errorf("Decrypt = %+v", dec)
	}
}

func TestErrors(t *testing.T) {
	_, c, a, b := start(t)
	ct := encrypt(t, c, a, []byte("secret"), []byte("user-a")).GetCiphertext()
	flipped := bytes.Clone(ct)
	flipped[len(flipped)/2] ^= 0x01
	big := make([]byte, 64<<10+1)
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"unknown key", func() error {
			_, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: a + "x", Plaintext: []byte("p")})
			return err
		}, codes.NotFound},
		{"unknown key decrypt", func() error {
			_, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: a + "x", Ciphertext: ct, AdditionalAuthenticatedData: []byte("user-a")})
			return err
		}, codes.NotFound},
		{"unknown version", func() error {
			_, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: a + "/cryptoKeyVersions/9", Plaintext: []byte("p")})
			return err
		}, codes.NotFound},
		{"malformed name", func() error {
			_, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: "projects/p/keyRings/r", Plaintext: []byte("p")})
			return err
		}, codes.InvalidArgument},
		{"wrong associated data", func() error {
			_, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: a, Ciphertext: ct, AdditionalAuthenticatedData: []byte("user-b")})
			return err
		}, codes.InvalidArgument},
		{"tampered ciphertext", func() error {
			_, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: a, Ciphertext: flipped, AdditionalAuthenticatedData: []byte("user-a")})
			return err
		}, codes.InvalidArgument},
		{"truncated ciphertext", func() error {
			_, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: a, Ciphertext: ct[:10], AdditionalAuthenticatedData: []byte("user-a")})
			return err
		}, codes.InvalidArgument},
		{"other key's ciphertext", func() error {
			_, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: b, Ciphertext: ct, AdditionalAuthenticatedData: []byte("user-a")})
			return err
		}, codes.InvalidArgument},
		{"decrypt names a version", func() error {
			_, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: a + "/cryptoKeyVersions/1", Ciphertext: ct, AdditionalAuthenticatedData: []byte("user-a")})
			return err
		}, codes.InvalidArgument},
		{"plaintext checksum mismatch", func() error {
			_, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: a, Plaintext: []byte("p"), PlaintextCrc32C: sum([]byte("q"))})
			return err
		}, codes.InvalidArgument},
		{"aad checksum mismatch", func() error {
			_, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: a, Plaintext: []byte("p"), AdditionalAuthenticatedData: []byte("x"), AdditionalAuthenticatedDataCrc32C: sum(nil)})
			return err
		}, codes.InvalidArgument},
		{"ciphertext checksum mismatch", func() error {
			_, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: a, Ciphertext: ct, CiphertextCrc32C: sum(flipped), AdditionalAuthenticatedData: []byte("user-a")})
			return err
		}, codes.InvalidArgument},
		{"plaintext over 64 KiB", func() error {
			_, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: a, Plaintext: big})
			return err
		}, codes.InvalidArgument},
		{"aad over 64 KiB", func() error {
			_, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: a, Plaintext: []byte("p"), AdditionalAuthenticatedData: big})
			return err
		}, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	s, c, a, _ := start(t)
	ctx := context.Background()
	old := encrypt(t, c, a, []byte("v1"), nil).GetCiphertext()
	if err := s.Rotate(a); err != nil {
		t.Fatal(err)
	}
	resp := encrypt(t, c, a, []byte("v2"), nil)
	if !strings.HasSuffix(resp.GetName(), "/cryptoKeyVersions/2") {
		t.Fatalf("after rotation encrypted with %q", resp.GetName())
	}
	dec, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: a, Ciphertext: old})
	if err != nil || string(dec.GetPlaintext()) != "v1" || dec.GetUsedPrimary() {
		t.Fatalf("old ciphertext after rotation: %v, used primary %v", err, dec.GetUsedPrimary())
	}
	// An explicit old version still encrypts, as KMS allows.
	v1 := encrypt(t, c, a, []byte("again"), nil)
	if v1.GetName() != a+"/cryptoKeyVersions/2" {
		t.Fatalf("primary is %q", v1.GetName())
	}
	r, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: a + "/cryptoKeyVersions/1", Plaintext: []byte("p")})
	if err != nil || r.GetName() != a+"/cryptoKeyVersions/1" {
		t.Fatalf("Encrypt with version 1: %v %q", err, r.GetName())
	}
	if err := s.Rotate(a + "nope"); status.Code(err) != codes.NotFound {
		t.Fatalf("Rotate unknown key: %v", err)
	}
}

func TestCreateKey(t *testing.T) {
	s, _, a, _ := start(t)
	if err := s.CreateKey(a); status.Code(err) != codes.AlreadyExists {
		t.Errorf("CreateKey twice: %v", err)
	}
	if err := s.CreateKey("projects/p/cryptoKeys/k"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("CreateKey malformed: %v", err)
	}
}

func TestCorruptResponses(t *testing.T) {
	s, c, a, _ := start(t)
	ct := encrypt(t, c, a, []byte("p"), nil).GetCiphertext()
	s.CorruptResponses(true)
	resp := encrypt(t, c, a, []byte("p"), nil)
	if resp.GetCiphertextCrc32C().GetValue() == sum(resp.GetCiphertext()).GetValue() {
		t.Error("corrupted ciphertext still matches its checksum")
	}
	dec, err := c.Decrypt(context.Background(), &kmspb.DecryptRequest{Name: a, Ciphertext: ct})
	if err != nil {
		t.Fatal(err)
	}
	if dec.GetPlaintextCrc32C().GetValue() == sum(dec.GetPlaintext()).GetValue() {
		t.Error("corrupted plaintext still matches its checksum")
	}
	if s.Calls() != 3 {
		t.Errorf("Calls = %d, want 3", s.Calls())
	}
}
