// Package fakekms is an in-process Cloud KMS for tests: a real gRPC server
// speaking google.cloud.kms.v1.KeyManagementService, so the production
// client (Tink's gcpkms over cloud.google.com/go/kms) runs unchanged
// against it. It implements what a KEK uses: Encrypt and Decrypt with
// symmetric keys, with Cloud KMS's documented behaviour: NotFound for an
// unknown key, InvalidArgument for a malformed name, oversized input,
// a CRC32C mismatch or a ciphertext that does not authenticate, key
// versions that keep decrypting after a rotation, and the integrity fields
// (verified_*_crc32c, *_crc32c) that the client checks.
//
// Each key version is a real random AES-256-GCM key held in memory for as
// long as the Server lives, so clients that reconnect keep their data.
package fakekms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	kmspb "cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// maxData is Cloud KMS's limit for plaintext and for associated data on
// SOFTWARE keys.
const maxData = 64 << 10

const (
	versionLen = 4 // big-endian key version number, first in a ciphertext
	nonceLen   = 12
	tagLen     = 16
)

var (
	keyNameRe     = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$`)
	versionNameRe = regexp.MustCompile(`^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)/cryptoKeyVersions/([0-9]+)$`)
	castagnoli    = crc32.MakeTable(crc32.Castagnoli)
)

// Server is a running fake Cloud KMS on a loopback TCP port.
type Server struct {
	kmspb.UnimplementedKeyManagementServiceServer

	gs  *grpc.Server
	lis net.Listener

	mu   sync.Mutex
	keys map[string]*cryptoKey // by CryptoKey resource name

	calls   atomic.Int64
	corrupt atomic.Bool
	hang    atomic.Bool
	stopped chan struct{} // closed by Close
	stop    sync.Once
}

type cryptoKey struct {
	versions []cipher.AEAD // version n is versions[n-1]
	primary  int           // 1-based
}

// Start listens on 127.0.0.1 (a free port) and serves until Close.
func Start() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("net.Listen: %w", err)
	}
	s := &Server{gs: grpc.NewServer(), lis: lis, keys: map[string]*cryptoKey{}, stopped: make(chan struct{})}
	kmspb.RegisterKeyManagementServiceServer(s.gs, s)
	go s.gs.Serve(lis) //nolint:errcheck // returns when Close stops it
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// ClientOptions point a Google Cloud client at this server: plaintext
// gRPC, no credentials.
func (s *Server) ClientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(s.Addr()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithTelemetryDisabled(),
	}
}

// Close stops the server, cutting open connections.
func (s *Server) Close() {
	s.stop.Do(func() { close(s.stopped) })
	s.gs.Stop()
}

// CreateKey creates a symmetric ENCRYPT_DECRYPT CryptoKey with one version;
// name is projects/P/locations/L/keyRings/R/cryptoKeys/K.
func (s *Server) CreateKey(name string) error {
	if !keyNameRe.MatchString(name) {
		return status.Errorf(codes.InvalidArgument, "invalid CryptoKey name %q", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[name]; ok {
		return status.Errorf(codes.AlreadyExists, "CryptoKey %s already exists.", name)
	}
	k := &cryptoKey{}
	if err := k.addVersion(); err != nil {
		return err
	}
	s.keys[name] = k
	return nil
}

// Rotate adds a new version to the key and makes it primary; ciphertext
// made with earlier versions still decrypts, as in Cloud KMS.
func (s *Server) Rotate(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[name]
	if !ok {
		return status.Errorf(codes.NotFound, "CryptoKey %s not found.", name)
	}
	return k.addVersion()
}

// Calls counts Encrypt and Decrypt requests received.
func (s *Server) Calls() int64 { return s.calls.Load() }

// CorruptResponses makes the server flip a bit of the data it returns
// without fixing the checksum, as a fault in transit would: a client that
// checks the CRC32C fields must reject the response.
func (s *Server) CorruptResponses(on bool) { s.corrupt.Store(on) }

// Hang makes Encrypt and Decrypt answer nothing until the caller gives up
// (its deadline or cancellation) or the server closes, as a KMS that is
// overloaded or cut off by the network does.
func (s *Server) Hang(on bool) { s.hang.Store(on) }

// wait blocks a call while the server hangs.
func (s *Server) wait(ctx context.Context) error {
	if !s.hang.Load() {
		return nil
	}
	select {
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.stopped:
		return status.Error(codes.Unavailable, "server stopped")
	}
}

func (k *cryptoKey) addVersion() error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return status.Errorf(codes.Internal, "rand.Read: %v", err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return status.Errorf(codes.Internal, "aes.NewCipher: %v", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return status.Errorf(codes.Internal, "cipher.NewGCM: %v", err)
	}
	k.versions = append(k.versions, gcm)
	k.primary = len(k.versions)
	return nil
}

func crc(b []byte) int64 { return int64(crc32.Checksum(b, castagnoli)) }

// checkCRC verifies an optional client checksum of field.
func checkCRC(field string, data []byte, sum *wrapperspb.Int64Value) error {
	if sum != nil && sum.GetValue() != crc(data) {
		return status.Errorf(codes.InvalidArgument,
			"The checksum in field %s_crc32c did not match the data in field %s.", field, field)
	}
	return nil
}

// lookup finds the key and version a request names; version 0 means the
// primary.
func (s *Server) lookup(name string, allowVersion bool) (gcm cipher.AEAD, keyName string, version int, err error) {
	keyName = name
	if m := versionNameRe.FindStringSubmatch(name); m != nil && allowVersion {
		keyName = m[1]
		version, err = strconv.Atoi(m[2])
		if err != nil || version < 1 {
			return nil, "", 0, status.Errorf(codes.InvalidArgument, "invalid CryptoKeyVersion name %q", name)
		}
	} else if !keyNameRe.MatchString(name) {
		return nil, "", 0, status.Errorf(codes.InvalidArgument, "invalid CryptoKey name %q", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[keyName]
	if !ok {
		return nil, "", 0, status.Errorf(codes.NotFound, "CryptoKey %s not found.", keyName)
	}
	if version == 0 {
		version = k.primary
	}
	if version > len(k.versions) {
		return nil, "", 0, status.Errorf(codes.NotFound, "CryptoKeyVersion %s not found.", name)
	}
	return k.versions[version-1], keyName, version, nil
}

// Encrypt implements KeyManagementService.Encrypt.
func (s *Server) Encrypt(ctx context.Context, req *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	s.calls.Add(1)
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	if len(req.GetPlaintext()) > maxData {
		return nil, status.Errorf(codes.InvalidArgument, "The plaintext must be no larger than %d bytes.", maxData)
	}
	if len(req.GetAdditionalAuthenticatedData()) > maxData {
		return nil, status.Errorf(codes.InvalidArgument, "The additional authenticated data must be no larger than %d bytes.", maxData)
	}
	if err := checkCRC("plaintext", req.GetPlaintext(), req.GetPlaintextCrc32C()); err != nil {
		return nil, err
	}
	if err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedData(), req.GetAdditionalAuthenticatedDataCrc32C()); err != nil {
		return nil, err
	}
	gcm, keyName, version, err := s.lookup(req.GetName(), true)
	if err != nil {
		return nil, err
	}
	ct := make([]byte, versionLen+nonceLen, versionLen+nonceLen+len(req.GetPlaintext())+tagLen)
	binary.BigEndian.PutUint32(ct, uint32(version))
	if _, err := rand.Read(ct[versionLen:]); err != nil {
		return nil, status.Errorf(codes.Internal, "rand.Read: %v", err)
	}
	ct = gcm.Seal(ct, ct[versionLen:], req.GetPlaintext(), req.GetAdditionalAuthenticatedData())
	sum := crc(ct)
	if s.corrupt.Load() {
		ct[len(ct)-1] ^= 0x01
	}
	return &kmspb.EncryptResponse{
		Name:                    fmt.Sprintf("%s/cryptoKeyVersions/%d", keyName, version),
		Ciphertext:              ct,
		CiphertextCrc32C:        wrapperspb.Int64(sum),
		VerifiedPlaintextCrc32C: req.GetPlaintextCrc32C() != nil,
		VerifiedAdditionalAuthenticatedDataCrc32C: req.GetAdditionalAuthenticatedDataCrc32C() != nil,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}, nil
}

// Decrypt implements KeyManagementService.Decrypt. As in Cloud KMS, the
// name is the CryptoKey (never a version): the ciphertext says which
// version made it.
func (s *Server) Decrypt(ctx context.Context, req *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	s.calls.Add(1)
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	if len(req.GetAdditionalAuthenticatedData()) > maxData {
		return nil, status.Errorf(codes.InvalidArgument, "The additional authenticated data must be no larger than %d bytes.", maxData)
	}
	if err := checkCRC("ciphertext", req.GetCiphertext(), req.GetCiphertextCrc32C()); err != nil {
		return nil, err
	}
	if err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedData(), req.GetAdditionalAuthenticatedDataCrc32C()); err != nil {
		return nil, err
	}
	if strings.Contains(req.GetName(), "/cryptoKeyVersions/") {
		return nil, status.Errorf(codes.InvalidArgument, "Decrypt takes a CryptoKey name, not a CryptoKeyVersion.")
	}
	if _, _, _, err := s.lookup(req.GetName(), false); err != nil {
		return nil, err
	}
	ct := req.GetCiphertext()
	if len(ct) < versionLen+nonceLen+tagLen {
		return nil, errDecrypt
	}
	version := int(binary.BigEndian.Uint32(ct))
	if version < 1 {
		return nil, errDecrypt
	}
	gcm, _, _, err := s.lookup(fmt.Sprintf("%s/cryptoKeyVersions/%d", req.GetName(), version), true)
	if status.Code(err) == codes.NotFound {
		return nil, errDecrypt // a version this key never had: the ciphertext is bad
	}
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(nil, ct[versionLen:versionLen+nonceLen], ct[versionLen+nonceLen:], req.GetAdditionalAuthenticatedData())
	if err != nil {
		return nil, errDecrypt
	}
	_, _, primary, _ := s.lookup(req.GetName(), false)
	sum := crc(pt)
	if s.corrupt.Load() {
		pt = append(pt, 0) // data changed after the checksum was taken
	}
	return &kmspb.DecryptResponse{
		Plaintext:       pt,
		PlaintextCrc32C: wrapperspb.Int64(sum),
		UsedPrimary:     version == primary,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}, nil
}

// errDecrypt is Cloud KMS's answer to ciphertext (or associated data) that
// does not authenticate; like KMS it says nothing about why.
var errDecrypt = status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid.")
