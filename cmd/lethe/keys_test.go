package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeysRewrapRotatesTheKeyFile: the runbook's KEK rotation on an
// embedded install: memories recorded under the old key file are read
// and found after `lethe keys rewrap --to new-file` put a new one in
// place, with the same uids mapping to the same users.
func TestKeysRewrapRotatesTheKeyFile(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("dora-uid", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := client{t, "http://" + p.addr, tok}
	c.upload("doraKeys", 0, "speech-hello.wav")
	before := c.waitDone("doraKeys", 1)
	user := p.app.pseudo.User("dora-uid")
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	kekPath := dataPaths{cfg.DataDir}.kek()
	oldKEK, err := os.ReadFile(kekPath)
	if err != nil {
		t.Fatal(err)
	}

	var ue usageError
	if _, err := runCmd(t, func(o, e *bytes.Buffer) error { return cmdKeys(ctx, cfg, []string{"rewrap"}, o, e) }); !errors.As(err, &ue) {
		t.Fatalf("rewrap of a key file without --to new-file: %v, want a usage error", err)
	}
	out, err := runCmd(t, func(o, e *bytes.Buffer) error {
		return cmdKeys(ctx, cfg, []string{"rewrap", "--to", "new-file"}, o, e)
	})
	if err != nil || !strings.Contains(out, "1 user keysets and 3 identity secrets") {
		t.Fatalf("keys rewrap: %v\n%s", err, out)
	}
	newKEK, err := os.ReadFile(kekPath)
	if err != nil || bytes.Equal(newKEK, oldKEK) {
		t.Fatalf("the key file was not replaced: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(kekPath), "kek-next.json")); !os.IsNotExist(err) {
		t.Fatalf("kek-next.json left behind: %v", err)
	}

	p2 := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	if got := p2.app.pseudo.User("dora-uid"); got != user {
		t.Fatalf("the uid maps to another user after the rotation: %s, was %s", got, user)
	}
	tok2, err := p2.app.issuer.Mint("dora-uid", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c2 := client{t, "http://" + p2.addr, tok2}
	var after conversationReply
	if code := c2.do("GET", "/v1/conversations/doraKeys", "", nil, &after); code != http.StatusOK || after.Transcript != before.Transcript {
		t.Fatalf("after the rotation: %d %q, want %q", code, after.Transcript, before.Transcript)
	}
	var res searchReply
	q := strings.Join(strings.Fields(before.Transcript)[:3], " ")
	if code := c2.search(q, &res); code != http.StatusOK || len(res.Results) == 0 || res.Results[0].ConversationID != "doraKeys" {
		t.Fatalf("search after the rotation: %d %+v", code, res.Results)
	}
}
