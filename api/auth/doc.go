// Package auth will be the /auth/v1 surface: Supabase Auth's (GoTrue's)
// HTTP API as @supabase/supabase-js speaks it — sign-up, sign-in, token
// refresh, the user, mail links and OAuth callbacks (api.Open routes).
// Users, passwords and sessions will belong to the domain package auth;
// this package will own only their HTTP. Until it exists the edge answers
// /auth/v1 behind the guard with 404.
package auth
