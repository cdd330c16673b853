package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/lethe-dev/lethe/infra/docs"
)

// RewrapKeysets wraps every user's stored keys again: unwrapped with from,
// wrapped with to. It rotates the KEK: with Cloud KMS, from and to may be
// the same key, whose new primary version then wraps everything (so old
// versions can be disabled); with a key file, to is the new file. Keys
// that already unwrap with to (a run that stopped half way) are left as
// they are, so running again resumes. The data keys themselves do not
// change: nothing sealed with them is touched. progress, when set, hears
// the running count.
func RewrapKeysets(ctx context.Context, store docs.Store, from, to KEK, progress func(done int)) (int, error) {
	done, cursor := 0, ""
	for {
		page, next, err := store.QueryPage(ctx, docs.Query{AllUsers: true, Collection: KeysetKey("x").Collection, Limit: docs.MaxPage}, cursor)
		if err != nil {
			return done, fmt.Errorf("docs.QueryPage keysets: %w", err)
		}
		for _, d := range page {
			if d.Key.ID != KeysetKey(d.Key.User).ID {
				continue
			}
			if err := rewrapKeyset(ctx, store, d.Key.User, from, to); err != nil {
				return done, fmt.Errorf("rewrap keyset of %s: %w", d.Key.User, err)
			}
			done++
			if progress != nil {
				progress(done)
			}
		}
		if next == "" {
			return done, nil
		}
		cursor = next
	}
}

func rewrapKeyset(ctx context.Context, store docs.Store, user string, from, to KEK) error {
	return store.Update(ctx, KeysetKey(user), func(cur *docs.Doc) (*docs.Doc, error) {
		if cur == nil {
			return nil, nil // shredded meanwhile
		}
		var kd keysetDoc
		if err := json.Unmarshal(cur.Data, &kd); err != nil {
			return nil, fmt.Errorf("json.Unmarshal keyset: %w", err)
		}
		ad := []byte(user)
		h, err := keyset.ReadWithContext(ctx, keyset.NewBinaryReader(bytes.NewReader(kd.Wrapped)), from, ad)
		if err != nil {
			if _, terr := keyset.ReadWithContext(ctx, keyset.NewBinaryReader(bytes.NewReader(kd.Wrapped)), to, ad); terr == nil {
				same := *cur
				return &same, nil // done by an earlier run
			}
			return nil, kekFailure(ctx, "keyset.ReadWithContext", err)
		}
		var buf bytes.Buffer
		if err := h.WriteWithContext(ctx, keyset.NewBinaryWriter(&buf), to, ad); err != nil {
			return nil, kekFailure(ctx, "keyset.WriteWithContext", err)
		}
		kd.Wrapped = buf.Bytes()
		if len(kd.MAC) > 0 {
			mac, err := from.DecryptWithContext(ctx, kd.MAC, MACAD(user))
			if err != nil {
				return nil, kekFailure(ctx, "kek.Decrypt digest key", err)
			}
			if kd.MAC, err = to.EncryptWithContext(ctx, mac, MACAD(user)); err != nil {
				return nil, kekFailure(ctx, "kek.Encrypt digest key", err)
			}
		}
		data, err := json.Marshal(kd)
		if err != nil {
			return nil, fmt.Errorf("json.Marshal: %w", err)
		}
		next := *cur
		next.Data = data
		return &next, nil
	})
}
