// Package filekek is the embedded key-encryption key: a Tink AES256-GCM
// keyset in a local file, created on first run.
//
// The keyset is stored in CLEARTEXT (insecurecleartextkeyset). That is
// acceptable only here: this file is the embedded stand-in for Cloud KMS,
// the root of the envelope, and something has to hold it unencrypted; it
// is protected by file permissions (0600 in a 0700 directory, anything
// wider is refused), and the startup guard refuses a local KEK when
// LETHE_ENV=production.
package filekek

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// maxFile bounds what Open reads: a one-key keyset is under 100 bytes.
const maxFile = 64 << 10

// KEK is the key in the file: a keys.KEK, and a tink.AEAD for Tink's
// functions that take one. Nothing it does blocks, so the context is only
// checked, as a remote KEK's would end the call.
type KEK struct {
	aead tink.AEAD
}

var _ tink.AEAD = (*KEK)(nil)

// EncryptWithContext encrypts plaintext bound to associatedData.
func (k *KEK) EncryptWithContext(ctx context.Context, plaintext, associatedData []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.aead.Encrypt(plaintext, associatedData)
}

// DecryptWithContext decrypts what EncryptWithContext made with the same
// associatedData.
func (k *KEK) DecryptWithContext(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.aead.Decrypt(ciphertext, associatedData)
}

// Encrypt is EncryptWithContext for Tink's functions that take a tink.AEAD.
func (k *KEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	return k.aead.Encrypt(plaintext, associatedData)
}

// Decrypt is DecryptWithContext for Tink's functions that take a tink.AEAD.
func (k *KEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	return k.aead.Decrypt(ciphertext, associatedData)
}

// Open returns the KEK stored at path, creating the file (0600, directory
// 0700) with a new AES256-GCM keyset if it does not exist. It refuses a
// file that group or others can access.
func Open(path string) (*KEK, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("os.MkdirAll: %w", err)
	}
	data, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := create(path); err != nil {
			return nil, err
		}
		data, err = readPrivate(path)
	}
	if err != nil {
		return nil, err
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewBinaryReader(bytes.NewReader(data)))
	if err != nil {
		return nil, fmt.Errorf("insecurecleartextkeyset.Read %s: %w", filepath.Base(path), err)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("aead.New: %w", err)
	}
	return &KEK{aead: a}, nil
}

// readPrivate reads path after checking, on the open descriptor, that it is
// a regular file with no group or other permissions.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("os.Open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file.Stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("filekek: %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("filekek: %s has mode %v, readable beyond its owner: chmod 600 it (or remove it to make a new key, which makes existing data unreadable)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("file.Read: %w", err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("filekek: %s is larger than %d bytes", path, maxFile)
	}
	return data, nil
}

// create writes a new keyset to a temp file and links it into place, which
// fails if path exists: two processes starting at once end with one key.
func create(path string) (err error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return fmt.Errorf("keyset.NewHandle: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewBinaryWriter(&buf)); err != nil {
		return fmt.Errorf("insecurecleartextkeyset.Write: %w", err)
	}
	return linkNew(path, buf.Bytes())
}

func linkNew(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".kek-*") // mode 0600
	if err != nil {
		return fmt.Errorf("os.CreateTemp: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("file.Write: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("file.Sync: %w", err)
	}
	if err := os.Link(f.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("os.Link: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("os.Open: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("dir.Sync: %w", err)
	}
	return nil
}
