package forget

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/vectors"
)

// ErrNoConversation: the user has no such conversation (nothing found in
// any store).
var ErrNoConversation = errors.New("forget: no such conversation")

// ConversationReceipt says what one conversation's erasure removed and what
// the verifier found left, per store. It names no conversation: the id is
// the user's data.
type ConversationReceipt struct {
	At     time.Time             `json:"at"`
	Stores map[string]StoreCount `json:"stores"`
}

// Conversations erases single conversations.
type Conversations struct {
	Docs    docs.Store
	Blobs   blobs.Bucket
	Vectors vectors.Index
	Audit   *audit.Log
	Now     func() time.Time
}

// conversationRounds bounds delete → verify rounds: a stage still writing
// the conversation's last chunk may land a document after the first pass.
const conversationRounds = 3

// page bounds one query of the conversation's records.
const page = 500

// Erase deletes the conversation's documents (conversation, chunks,
// segments, their expiry entries), audio blobs and vectors, verifies that
// nothing is left, and records an audit entry with the counts.
func (c *Conversations) Erase(ctx context.Context, user, cid, actor string) (ConversationReceipt, error) {
	if !records.ValidConversationID(cid) || !docs.ValidSegment(user) {
		return ConversationReceipt{}, fmt.Errorf("%w: conversation", docs.ErrInvalid)
	}
	found, err := c.inventory(ctx, user, cid)
	if err != nil {
		return ConversationReceipt{}, err
	}
	if found[StoreDocuments]+found[StoreBlobs]+found[StoreVectors] == 0 {
		return ConversationReceipt{}, ErrNoConversation
	}
	rec := ConversationReceipt{Stores: map[string]StoreCount{}}
	var left map[string]int
	for round := 0; ; round++ {
		if err := c.delete(ctx, user, cid); err != nil {
			return rec, err
		}
		if left, err = c.inventory(ctx, user, cid); err != nil {
			return rec, err
		}
		if left[StoreDocuments]+left[StoreBlobs]+left[StoreVectors] == 0 || round+1 == conversationRounds {
			break
		}
	}
	counts := map[string]int{}
	for store, n := range found {
		rec.Stores[store] = StoreCount{Found: n, Deleted: max(0, n-left[store]), Remaining: left[store]}
		counts[store+".deleted"] = max(0, n-left[store])
		counts[store+".remaining"] = left[store]
	}
	rec.At = c.now()
	if c.Audit != nil {
		if _, err := c.Audit.Append(ctx, audit.Entry{At: rec.At, Actor: actor, Action: audit.ActionConversationDeleted, Subject: user, Counts: counts}); err != nil {
			return rec, fmt.Errorf("audit.Append: %w", err)
		}
	}
	return rec, nil
}

func audioPrefix(user, cid string) string { return records.AudioPrefix(user) + cid + "/" }

func byConversation(user, coll, cid string) docs.Query {
	return docs.Query{User: user, Collection: coll, Filters: []docs.Filter{{Field: records.FieldConversation, Op: docs.Eq, Value: cid}}, Limit: page}
}

// inventory counts the conversation in every store.
func (c *Conversations) inventory(ctx context.Context, user, cid string) (map[string]int, error) {
	out := map[string]int{}
	for _, coll := range []string{records.Chunks, records.Segments} {
		for q := byConversation(user, coll, cid); ; {
			found, err := c.Docs.Query(ctx, q)
			if err != nil {
				return nil, fmt.Errorf("docs.Query %s: %w", coll, err)
			}
			out[StoreDocuments] += len(found)
			if len(found) < page {
				break
			}
			q.Filters = append(byConversation(user, coll, cid).Filters,
				docs.Filter{Field: records.FieldSeq, Op: docs.Gt, Value: found[len(found)-1].Fields[records.FieldSeq]})
			q.OrderBy = records.FieldSeq
		}
	}
	if _, err := c.Docs.Get(ctx, records.ConversationKey(user, cid)); err == nil {
		out[StoreDocuments]++
	} else if !errors.Is(err, docs.ErrNotFound) {
		return nil, fmt.Errorf("docs.Get conversation: %w", err)
	}
	objs, err := c.Blobs.List(ctx, audioPrefix(user, cid))
	if err != nil {
		return nil, fmt.Errorf("blobs.List: %w", err)
	}
	out[StoreBlobs] = len(objs)
	ids, err := c.Vectors.ListIDs(ctx, user, records.VectorPrefix(cid))
	if err != nil {
		return nil, fmt.Errorf("vectors.ListIDs: %w", err)
	}
	out[StoreVectors] = len(ids)
	return out, nil
}

// delete removes what inventory counts, vectors and blobs before the
// records that name them, so a crash leaves records to find them by.
func (c *Conversations) delete(ctx context.Context, user, cid string) error {
	ids, err := c.Vectors.ListIDs(ctx, user, records.VectorPrefix(cid))
	if err != nil {
		return fmt.Errorf("vectors.ListIDs: %w", err)
	}
	for len(ids) > 0 {
		n := min(len(ids), 1000)
		if err := c.Vectors.Delete(ctx, user, ids[:n]); err != nil {
			return fmt.Errorf("vectors.Delete: %w", err)
		}
		ids = ids[n:]
	}
	if _, err := c.Blobs.DeletePrefix(ctx, audioPrefix(user, cid)); err != nil {
		return fmt.Errorf("blobs.DeletePrefix: %w", err)
	}
	for _, coll := range []string{records.SegmentParts, records.Segments, records.Chunks} {
		for {
			found, err := c.Docs.Query(ctx, byConversation(user, coll, cid))
			if err != nil {
				return fmt.Errorf("docs.Query %s: %w", coll, err)
			}
			for _, d := range found {
				for _, class := range []string{records.ClassAudio, records.ClassTranscript, records.ClassVector} {
					if err := c.Docs.Delete(ctx, records.ExpiryKey(user, class, d.Key.ID)); err != nil {
						return fmt.Errorf("docs.Delete expiry: %w", err)
					}
				}
				if err := c.Docs.Delete(ctx, d.Key); err != nil {
					return fmt.Errorf("docs.Delete %s: %w", coll, err)
				}
			}
			if len(found) < page {
				break
			}
		}
	}
	if err := c.Docs.Delete(ctx, records.ConversationKey(user, cid)); err != nil {
		return fmt.Errorf("docs.Delete conversation: %w", err)
	}
	return nil
}

func (c *Conversations) now() time.Time {
	if c.Now == nil {
		return time.Now().UTC()
	}
	return c.Now().UTC()
}
