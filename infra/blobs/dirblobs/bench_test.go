package dirblobs_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
)

const benchSize = 1 << 20

func benchBucket(b *testing.B) blobs.Bucket {
	b.Helper()
	bk, err := dirblobs.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bk.Close() })
	return bk
}

// BenchmarkWrite: 1 MiB, fsync of file and directory included.
func BenchmarkWrite(b *testing.B) {
	for _, createOnly := range []bool{false, true} {
		b.Run(fmt.Sprintf("CreateOnly=%v", createOnly), func(b *testing.B) {
			bk := benchBucket(b)
			data := bytes.Repeat([]byte{0x5A}, benchSize)
			b.SetBytes(benchSize)
			i := 0
			for b.Loop() {
				key := fmt.Sprintf("users/u%d/audio/c1#%06d", i%16, i)
				if _, err := bk.Write(b.Context(), key, bytes.NewReader(data), blobs.WriteOptions{ContentType: "audio/wav", CreateOnly: createOnly}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkRead(b *testing.B) {
	bk := benchBucket(b)
	data := bytes.Repeat([]byte{0x5A}, benchSize)
	const objects = 16
	for i := range objects {
		if _, err := bk.Write(b.Context(), fmt.Sprintf("users/u1/audio/c1#%d", i), bytes.NewReader(data), blobs.WriteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 256<<10)
	b.SetBytes(benchSize)
	i := 0
	for b.Loop() {
		r, _, err := bk.Read(b.Context(), fmt.Sprintf("users/u1/audio/c1#%d", i%objects))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, r, buf)
		r.Close()
		if err != nil || n != benchSize {
			b.Fatalf("read %d, %v", n, err)
		}
		i++
	}
}
