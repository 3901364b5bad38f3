package auth

// Config is the auth subsystem's configuration.
type Config struct {
	// JWTSecret signs and verifies every token (FLUXBASE_JWT_SECRET); at
	// least MinSecretLength characters.
	JWTSecret string
}
