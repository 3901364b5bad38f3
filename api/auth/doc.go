// Package auth is the /auth/v1 surface: Supabase Auth's (GoTrue's) HTTP
// API as @supabase/supabase-js's auth-js speaks it — sign-up (email and
// password, anonymous), the password and refresh-token grants, sign-out
// by scope, the user's own GET and PUT, settings and health, and the
// admin API for the service key.
//
// It owns only the HTTP: request bodies, GoTrue's JSON shapes, statuses
// and error codes, the X-Supabase-Api-Version behaviour. Users, passwords,
// sessions and revocation belong to the domain package auth. Each route
// declares its access with api.Access; the guard's refusals on this
// prefix are rendered in GoTrue's error shape, since auth-js reads that
// one.
package auth
