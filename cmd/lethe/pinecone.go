package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/pinecone-io/go-pinecone/v5/pinecone"

	"github.com/lethe-dev/lethe/infra/vectors/pineconevectors"
)

// cmdPinecone: `lethe pinecone ensure-index [--name N] [--cloud C] [--region R]`
// creates the serverless cosine index for the configured embedder's
// dimension unless it exists, and prints its host for
// LETHE_PINECONE_INDEX_HOST.
func cmdPinecone(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "ensure-index" {
		return usageError{errors.New("want: lethe pinecone ensure-index [--name N] [--cloud C] [--region R]")}
	}
	fs := newFlagSet("pinecone ensure-index", stderr)
	name := fs.String("name", "lethe-memories", "index name")
	cloud := fs.String("cloud", "gcp", "serverless cloud")
	region := fs.String("region", "europe-west4", "serverless region")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	if cfg.PineconeAPIKey == "" {
		return usageError{errors.New("PINECONE_API_KEY is required")}
	}
	pc, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: cfg.PineconeAPIKey, SourceTag: "lethe"})
	if err != nil {
		return fmt.Errorf("pinecone.NewClient: %w", err)
	}
	host, err := pineconevectors.EnsureIndex(ctx, pc, *name, embedDim(cfg), *cloud, *region)
	if err != nil {
		return fmt.Errorf("pineconevectors.EnsureIndex: %w", err)
	}
	fmt.Fprintln(stdout, host)
	return nil
}
