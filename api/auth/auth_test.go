package auth_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	apiauth "github.com/fluxbase/fluxbase/api/auth"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var baseURL string

// TestAuthAPI runs the surface's tests on one edge with the auth surface
// on a migrated database, each test with its own addresses.
func TestAuthAPI(t *testing.T) {
	db := apitest.NewDB(t, "")
	svc, err := auth.NewService(auth.Config{JWTSecret: apitest.Secret, BcryptCost: 4, Autoconfirm: true,
		AnonymousUsers: true, RefreshReuseInterval: 10 * time.Second}, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	edge := api.New(api.Config{Surfaces: []api.Surface{apiauth.New(apiauth.Config{Service: svc, Version: "test"})}},
		apitest.Verifier(t), zap.NewNop(), prometheus.NewRegistry())
	srv := httptest.NewServer(edge)
	t.Cleanup(srv.Close)
	baseURL = srv.URL
	for name, test := range map[string]func(*testing.T){
		"UserFlow": testUserFlow, "ErrorShapes": testErrorShapes, "Access": testAccess, "NoEnumeration": testNoEnumeration,
		"BadInput": testBadInput, "Anonymous": testAnonymous, "Admin": testAdmin,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t)
		})
	}
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// call sends what auth-js sends: the key, the API version, JSON.
func call(t *testing.T, method, path, bearer string, body any, headers ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, baseURL+"/auth/v1"+path, rd)
	req.Header.Set("apikey", apitest.Key(t, auth.RoleAnon))
	req.Header.Set("X-Supabase-Api-Version", "2024-01-01")
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: not a JSON object: %q", method, path, raw)
		}
	}
	return r
}

func (r reply) wantError(t *testing.T, status int, code string) {
	t.Helper()
	if r.status != status || r.body["code"] != code || r.body["error_code"] != code || r.body["msg"] == nil || r.body["msg"] != r.body["message"] {
		t.Fatalf("got %d %s, want %d %s", r.status, r.raw, status, code)
	}
	if r.header.Get("X-Supabase-Api-Version") != "2024-01-01" {
		t.Fatalf("no API version header on %s", r.raw)
	}
}

func signUp(t *testing.T, email string) map[string]any {
	t.Helper()
	r := call(t, "POST", "/signup", "", map[string]any{"email": email, "password": "secret-pass", "data": map[string]any{"n": 1},
		"gotrue_meta_security": map[string]any{}, "code_challenge": nil, "code_challenge_method": nil})
	if r.status != 200 || r.body["access_token"] == nil || r.body["refresh_token"] == "" || r.body["expires_in"] != float64(3600) ||
		r.body["token_type"] != "bearer" || r.body["expires_at"] == nil {
		t.Fatalf("signup: %d %s", r.status, r.raw)
	}
	return r.body
}

func testUserFlow(t *testing.T) {
	sess := signUp(t, "flow@example.com")
	user := sess["user"].(map[string]any)
	for _, k := range []string{"id", "aud", "role", "email", "phone", "email_confirmed_at", "confirmed_at", "last_sign_in_at",
		"app_metadata", "user_metadata", "identities", "created_at", "updated_at", "is_anonymous"} {
		if _, ok := user[k]; !ok {
			t.Errorf("user lacks %s: %v", k, user)
		}
	}
	for _, k := range []string{"invited_at", "recovery_sent_at", "new_email", "factors", "banned_until"} {
		if _, ok := user[k]; ok {
			t.Errorf("user has %s though it is unset", k)
		}
	}
	ident := user["identities"].([]any)[0].(map[string]any)
	if ident["id"] != user["id"] || ident["user_id"] != user["id"] || ident["identity_id"] == user["id"] || ident["provider"] != "email" ||
		ident["identity_data"].(map[string]any)["email"] != "flow@example.com" {
		t.Fatalf("identity %v", ident)
	}
	access := sess["access_token"].(string)

	r := call(t, "POST", "/token?grant_type=password", "", map[string]any{"email": "FLOW@example.com", "password": "secret-pass"})
	if r.status != 200 || r.body["user"].(map[string]any)["id"] != user["id"] {
		t.Fatalf("password grant: %d %s", r.status, r.raw)
	}
	second := r.body["access_token"].(string)

	r = call(t, "GET", "/user", access, nil)
	if r.status != 200 || r.body["id"] != user["id"] {
		t.Fatalf("user: %d %s", r.status, r.raw)
	}
	r = call(t, "PUT", "/user", access, map[string]any{"data": map[string]any{"n": nil, "m": "x"}})
	if r.status != 200 || len(r.body["user_metadata"].(map[string]any)) != 1 {
		t.Fatalf("update: %d %s", r.status, r.raw)
	}
	call(t, "PUT", "/user", access, map[string]any{"password": "secret-pass"}).wantError(t, 422, "same_password")
	r = call(t, "PUT", "/user", access, map[string]any{"password": "x"})
	r.wantError(t, 422, "weak_password")
	if reasons := r.body["weak_password"].(map[string]any)["reasons"].([]any); len(reasons) != 1 || reasons[0] != "length" {
		t.Fatalf("reasons %v", r.body)
	}

	r = call(t, "POST", "/token?grant_type=refresh_token", "", map[string]any{"refresh_token": sess["refresh_token"]})
	if r.status != 200 || r.body["refresh_token"] == sess["refresh_token"] {
		t.Fatalf("refresh: %d %s", r.status, r.raw)
	}
	call(t, "POST", "/token?grant_type=refresh_token", "", map[string]any{"refresh_token": "nope"}).wantError(t, 400, "refresh_token_not_found")

	r = call(t, "POST", "/logout?scope=local", access, nil)
	if r.status != 204 {
		t.Fatalf("logout: %d %s", r.status, r.raw)
	}
	call(t, "GET", "/user", access, nil).wantError(t, 403, "session_not_found")
	if r := call(t, "GET", "/user", second, nil); r.status != 200 {
		t.Fatalf("the other session ended with the local one: %d %s", r.status, r.raw)
	}
	call(t, "POST", "/logout?scope=everything", second, nil).wantError(t, 400, "validation_failed")
	if r := call(t, "POST", "/logout", second, nil); r.status != 204 {
		t.Fatalf("global logout: %d", r.status)
	}
	call(t, "GET", "/user", second, nil).wantError(t, 403, "session_not_found")
}

// The two error shapes: GoTrue's current one for a client naming
// 2024-01-01, the legacy one (numeric code) otherwise.
func testErrorShapes(t *testing.T) {
	r := call(t, "POST", "/token?grant_type=password", "", map[string]any{"email": "nobody@example.com", "password": "x"},
		"X-Supabase-Api-Version", "")
	if r.status != 400 || r.body["code"] != float64(400) || r.body["error_code"] != "invalid_credentials" || r.body["msg"] == nil ||
		r.header.Get("X-Supabase-Api-Version") != "" {
		t.Fatalf("legacy: %d %v %s", r.status, r.header, r.raw)
	}
	call(t, "POST", "/token?grant_type=password", "", map[string]any{"email": "nobody@example.com", "password": "x"}).
		wantError(t, 400, "invalid_credentials")
	call(t, "POST", "/token?grant_type=magic", "", map[string]any{}).wantError(t, 400, "validation_failed")
}

// The guard's refusals on /auth/v1 speak GoTrue.
func testAccess(t *testing.T) {
	call(t, "GET", "/user", "", nil).wantError(t, 403, "bad_jwt")
	call(t, "GET", "/user", "not-a-jwt", nil).wantError(t, 401, "bad_jwt")
	call(t, "GET", "/admin/users", "", nil).wantError(t, 403, "not_admin")
	call(t, "GET", "/nothing", "", nil).wantError(t, 404, "not_found")
	r := call(t, "GET", "/user", "", nil, "apikey", "")
	r.wantError(t, 401, "no_authorization")
	for _, path := range []string{"/settings", "/health"} {
		if r := call(t, "GET", path, "", nil, "apikey", ""); r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
	}
	r = call(t, "GET", "/settings", "", nil)
	if r.body["external"].(map[string]any)["email"] != true || r.body["mailer_autoconfirm"] != true || r.body["disable_signup"] != false {
		t.Fatalf("settings %s", r.raw)
	}
}

// An unknown address and a wrong password answer byte for byte alike.
func testNoEnumeration(t *testing.T) {
	signUp(t, "enum@example.com")
	wrong := call(t, "POST", "/token?grant_type=password", "", map[string]any{"email": "enum@example.com", "password": "wrong-pass"})
	unknown := call(t, "POST", "/token?grant_type=password", "", map[string]any{"email": "enum2@example.com", "password": "wrong-pass"})
	if wrong.status != 400 || wrong.raw != unknown.raw || wrong.status != unknown.status {
		t.Fatalf("wrong password %d %s, unknown user %d %s", wrong.status, wrong.raw, unknown.status, unknown.raw)
	}
}

func testBadInput(t *testing.T) {
	call(t, "POST", "/signup", "", `{"email": "x@example.com", "password": `).wantError(t, 400, "bad_json")
	call(t, "POST", "/signup", "", `[1, 2]`).wantError(t, 400, "bad_json")
	call(t, "POST", "/signup", "", `{"email": 5}`).wantError(t, 400, "bad_json")
	call(t, "POST", "/signup", "", `{"email": "a@example.com", "password": "secret-pass", "data": "not an object"}`).wantError(t, 400, "bad_json")
	call(t, "POST", "/signup", "", `{"email": "a@example.com"} {"email": "b@example.com"}`).wantError(t, 400, "bad_json")
	call(t, "POST", "/signup", "", `{"email": "big@example.com", "password": "secret-pass", "data": {"x": "`+strings.Repeat("a", 100<<10)+`"}}`).
		wantError(t, 413, "validation_failed")
	for _, email := range []string{"a\u200b@example.com", "ann@exam\u202eple.com", "Ann <ann@example.com>", "ann@example.com\x00",
		"x' or '1'='1@example.com; --", "\xff\xfe@example.com"} {
		call(t, "POST", "/signup", "", map[string]any{"email": email, "password": "secret-pass"}).wantError(t, 400, "email_address_invalid")
	}
	call(t, "POST", "/signup", "", map[string]any{"email": "long@example.com", "password": strings.Repeat("p", 73)}).
		wantError(t, 400, "validation_failed")
	call(t, "POST", "/signup", "", map[string]any{"phone": "+15555550100", "password": "secret-pass"}).wantError(t, 422, "phone_provider_disabled")
	signUp(t, "twice@example.com")
	call(t, "POST", "/signup", "", map[string]any{"email": "TWICE@example.com", "password": "secret-pass"}).wantError(t, 422, "user_already_exists")
}

func testAnonymous(t *testing.T) {
	r := call(t, "POST", "/signup", "", map[string]any{"data": map[string]any{}, "gotrue_meta_security": map[string]any{}})
	if r.status != 200 || r.body["user"].(map[string]any)["is_anonymous"] != true || r.body["access_token"] == nil {
		t.Fatalf("anonymous: %d %s", r.status, r.raw)
	}
	u := r.body["user"].(map[string]any)
	if u["email"] != "" || u["phone"] != "" || len(u["app_metadata"].(map[string]any)) != 0 {
		t.Fatalf("anonymous user %v", u)
	}
}

func adminCall(t *testing.T, method, path string, body any) reply {
	t.Helper()
	service := apitest.Key(t, auth.RoleServiceRole)
	return call(t, method, path, service, body, "apikey", service)
}

func testAdmin(t *testing.T) {
	// OpenBSD's bcrypt test vector: "U*U".
	r := adminCall(t, "POST", "/admin/users", map[string]any{"email": "adm@example.com", "email_confirm": true,
		"password_hash": "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "user_metadata": map[string]any{"k": "v"}})
	if r.status != 200 || r.body["email"] != "adm@example.com" || r.body["user_metadata"].(map[string]any)["k"] != "v" {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	id := r.body["id"].(string)
	adminCall(t, "POST", "/admin/users", map[string]any{"email": "adm@example.com"}).wantError(t, 422, "email_exists")
	login := call(t, "POST", "/token?grant_type=password", "", map[string]any{"email": "adm@example.com", "password": "U*U"})
	if login.status != 200 {
		t.Fatalf("imported hash: %d %s", login.status, login.raw)
	}
	for i := range 3 {
		adminCall(t, "POST", "/admin/users", map[string]any{"email": strings.Repeat("q", i+1) + "@paging.example.com"})
	}
	r = adminCall(t, "GET", "/admin/users?page=1&per_page=2", nil)
	if r.status != 200 || len(r.body["users"].([]any)) != 2 || r.body["aud"] != "authenticated" {
		t.Fatalf("list: %d %s", r.status, r.raw)
	}
	total := r.header.Get("X-Total-Count")
	link := r.header.Get("Link")
	if total == "" || !strings.Contains(link, `</auth/v1/admin/users?page=2&per_page=2>; rel="next"`) || !strings.Contains(link, `rel="last"`) {
		t.Fatalf("paging headers: %q, %q", total, link)
	}
	// auth-js's reading of Link: the character after each link's first '='.
	for _, l := range strings.Split(link, ",") {
		if c := strings.SplitN(strings.Split(l, ";")[0], "=", 2)[1][:1]; c < "1" || c > "9" {
			t.Fatalf("auth-js would read page %q from %q", c, l)
		}
	}
	adminCall(t, "GET", "/admin/users?page=0", nil).wantError(t, 400, "validation_failed")
	adminCall(t, "GET", "/admin/users?per_page=abc", nil).wantError(t, 400, "validation_failed")
	if r := adminCall(t, "GET", "/admin/users?page=&per_page=", nil); r.status != 200 {
		t.Fatalf("empty paging parameters: %d", r.status)
	}

	r = adminCall(t, "PUT", "/admin/users/"+id, map[string]any{"ban_duration": "1h", "app_metadata": map[string]any{"tier": "gold"}})
	if r.status != 200 || r.body["banned_until"] == nil || r.body["app_metadata"].(map[string]any)["tier"] != "gold" {
		t.Fatalf("ban: %d %s", r.status, r.raw)
	}
	call(t, "GET", "/user", login.body["access_token"].(string), nil).wantError(t, 403, "session_not_found")
	call(t, "POST", "/token?grant_type=password", "", map[string]any{"email": "adm@example.com", "password": "U*U"}).wantError(t, 400, "user_banned")
	adminCall(t, "PUT", "/admin/users/"+id, map[string]any{"ban_duration": "a while"}).wantError(t, 400, "validation_failed")

	if r := adminCall(t, "GET", "/admin/users/"+id, nil); r.status != 200 || r.body["id"] != id {
		t.Fatalf("get: %d %s", r.status, r.raw)
	}
	if r := adminCall(t, "DELETE", "/admin/users/"+id, nil); r.status != 200 || r.raw != "{}\n" {
		t.Fatalf("delete: %d %q", r.status, r.raw)
	}
	adminCall(t, "GET", "/admin/users/"+id, nil).wantError(t, 404, "user_not_found")
	adminCall(t, "GET", "/admin/users/not-a-uuid", nil).wantError(t, 404, "user_not_found")
	adminCall(t, "DELETE", "/admin/users/"+id, nil).wantError(t, 404, "user_not_found")
}
