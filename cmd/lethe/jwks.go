package main

import "github.com/lethe-dev/lethe/infra/auth/localissuer"

// servedJWKS is what the edge serves at /.well-known/jwks.json: the local
// issuer's public keys with LETHE_AUTH=local, nothing otherwise. The issuer
// exists in every mode (lethe token), but with Firebase auth its keys are
// not trusted, and publishing them would invite clients to trust them.
func servedJWKS(cfg Config, iss *localissuer.Issuer) []byte {
	if cfg.Auth != "local" {
		return nil
	}
	return iss.JWKS()
}
