package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/gcpkek/fakekms"
)

// productionConfig is a production process of its own: its own data dir,
// the KEK in (fake) Cloud KMS. openApp is called directly because
// loadConfig refuses emulators in production, on purpose.
func productionConfig(t *testing.T, kms *fakekms.Server) (Config, overrides) {
	t.Helper()
	cfg := testConfig(t)
	cfg.Env = envProduction
	cfg.KEK = "gcpkms://projects/lethe-test/locations/global/keyRings/lethe/cryptoKeys/identity"
	return cfg, overrides{KMSOptions: kms.ClientOptions(), STT: instantSTT{}}
}

func startKMS(t *testing.T) *fakekms.Server {
	t.Helper()
	kms, err := fakekms.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kms.Close)
	if err := kms.CreateKey("projects/lethe-test/locations/global/keyRings/lethe/cryptoKeys/identity"); err != nil {
		t.Fatal(err)
	}
	return kms
}

// TestSharedIdentityOnEmulators: two production instances with separate
// data dirs on one Firestore derive the same stored user for a uid.
func TestSharedIdentityOnEmulators(t *testing.T) {
	_, fsHost := requireEmulators(t)
	kms := startKMS(t)
	project := fmt.Sprintf("identity-%d", time.Now().UnixNano())
	var cfgs [2]Config
	var ovs [2]overrides
	for i := range cfgs {
		cfgs[i], ovs[i] = productionConfig(t, kms)
		cfgs[i].ProjectID = project
		cfgs[i].Documents, cfgs[i].FirestoreEmulatorHost = "firestore", fsHost
	}
	checkSharedIdentity(t, cfgs, ovs)
}

// TestSharedIdentityOnOneStore is the same claim on one shared SQLite
// store, so it runs without emulators.
func TestSharedIdentityOnOneStore(t *testing.T) {
	kms := startKMS(t)
	var cfgs [2]Config
	var ovs [2]overrides
	path := filepath.Join(t.TempDir(), "shared-docs.db")
	for i := range cfgs {
		cfgs[i], ovs[i] = productionConfig(t, kms)
		// One connection per instance, as separate processes would have.
		s, err := sqlitedocs.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		ovs[i].Docs = s
	}
	checkSharedIdentity(t, cfgs, ovs)
}

func checkSharedIdentity(t *testing.T, cfgs [2]Config, ovs [2]overrides) {
	t.Helper()
	ctx := context.Background()
	if cfgs[0].DataDir == cfgs[1].DataDir {
		t.Fatal("the instances share a data dir")
	}
	// Both start at once: the first start of each creates the secrets, and
	// the race must end with one.
	apps := make([]*app, 2)
	errs := make(chan error, 2)
	for i := range apps {
		go func() {
			a, err := openApp(ctx, cfgs[i], testLogger(t), ovs[i])
			apps[i] = a
			errs <- err
		}()
	}
	for range apps {
		if err := <-errs; err != nil {
			t.Fatalf("openApp: %v", err)
		}
	}
	for _, a := range apps {
		t.Cleanup(a.close)
	}
	const uid = "firebase-uid-shared-7f3a"
	user := apps[0].pseudo.User(uid)
	if got := apps[1].pseudo.User(uid); got != user {
		t.Fatalf("instance 2 stores the uid as %s, instance 1 as %s", got, user)
	}
	if user[0] != '1' {
		t.Fatalf("pseudonym %s does not name secret version 1", user)
	}
	if a, b := apps[0].logUsers.Attr(uid).Value.String(), apps[1].logUsers.Attr(uid).Value.String(); a != b {
		t.Fatalf("log hashes differ: %s, %s", a, b)
	}
	if len(apps[0].exportURLKey) != 32 || !bytes.Equal(apps[0].exportURLKey, apps[1].exportURLKey) {
		t.Fatal("export URL keys differ")
	}
	// The user's data key is shared too: what one instance seals, the
	// other opens.
	ad := keys.AD(user, "notes", "n1", "text")
	ct, err := apps[0].keys.Seal(ctx, user, []byte("shared"), ad)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := apps[1].keys.Open(ctx, user, ct, ad); err != nil || string(pt) != "shared" {
		t.Fatalf("instance 2 opened %q (%v)", pt, err)
	}
	if _, err := apps[1].docs.Get(ctx, docs.Key{User: user, Collection: "keys", ID: "dek"}); err != nil {
		t.Fatalf("instance 2 does not see the user's keyset under %s: %v", user, err)
	}

	// A restart (a new instance on a fresh data dir) derives the same.
	cfg := cfgs[0]
	cfg.DataDir = t.TempDir()
	again, err := openApp(ctx, cfg, testLogger(t), ovs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer again.close()
	if got := again.pseudo.User(uid); got != user {
		t.Fatalf("after a restart the uid is stored as %s, before as %s", got, user)
	}
}

// TestProductionRefusesLegacyKeyFiles: the per-process key files of
// earlier versions stop a production start; development ignores them.
func TestProductionRefusesLegacyKeyFiles(t *testing.T) {
	for _, name := range []string{"uid-hmac.key", "log-hmac.key"} {
		t.Run(name, func(t *testing.T) {
			kms := startKMS(t)
			cfg, ov := productionConfig(t, kms)
			if err := os.MkdirAll(filepath.Join(cfg.DataDir, "keys"), 0o700); err != nil {
				t.Fatal(err)
			}
			legacy := bytes.Repeat([]byte{7}, 32)
			if err := os.WriteFile(filepath.Join(cfg.DataDir, "keys", name), legacy, 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := openApp(context.Background(), cfg, testLogger(t), ov)
			if err == nil {
				a.close()
				t.Fatal("production started with a local identity key file")
			}
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "LETHE_ENV=production") {
				t.Fatalf("error does not say which file and why: %v", err)
			}

			cfg.Env = envDevelopment
			a, err = openApp(context.Background(), cfg, testLogger(t), ov)
			if err != nil {
				t.Fatalf("development refused the legacy file: %v", err)
			}
			defer a.close()
			if bytes.Equal(a.exportURLKey, legacy) {
				t.Fatal("development used the legacy file")
			}
		})
	}
}
