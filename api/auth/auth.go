package auth

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	domain "github.com/fluxbase/fluxbase/auth"
)

// Prefix is where the surface is served.
const Prefix = "/auth/v1"

// Config configures the surface.
type Config struct {
	// Service is the domain: users, sessions, revocation.
	Service *domain.Service
	// Limiter counts the per-IP rate limits across nodes; nil limits
	// nothing.
	Limiter *domain.RateLimiter
	// Version is reported by /health.
	Version string
	Log     *zap.Logger
}

type handlers struct {
	svc     *domain.Service
	limiter *domain.RateLimiter
	version string
	log     *zap.Logger
}

// New returns the /auth/v1 surface.
func New(cfg Config) api.Surface {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	h := &handlers{svc: cfg.Service, limiter: cfg.Limiter, version: cfg.Version, log: cfg.Log}
	sc := cfg.Service.Config()
	route := func(method, pattern string, access api.Access, f http.HandlerFunc) api.Route {
		return api.Route{Method: method, Pattern: pattern, Access: access, Handler: f}
	}
	return api.Surface{Prefix: Prefix, WriteError: guardError, Routes: []api.Route{
		// GoTrue serves these two to anyone.
		route(http.MethodGet, "/health", api.Open, h.health),
		route(http.MethodGet, "/settings", api.Open, h.settings),
		route(http.MethodGet, "/.well-known/jwks.json", api.Open, h.jwks),
		route(http.MethodPost, "/signup", api.NeedKey, h.limit("signup", sc.RateLimitSignup, h.signup)),
		route(http.MethodPost, "/token", api.NeedKey, h.limit("token", sc.RateLimitToken, h.token)),
		route(http.MethodPost, "/logout", api.NeedUser, h.logout),
		route(http.MethodPost, "/recover", api.NeedKey, h.limit("otp", sc.RateLimitOTP, h.recover)),
		route(http.MethodPost, "/otp", api.NeedKey, h.limit("otp", sc.RateLimitOTP, h.otp)),
		route(http.MethodPost, "/resend", api.NeedKey, h.limit("otp", sc.RateLimitOTP, h.resend)),
		route(http.MethodPost, "/invite", api.NeedService, h.invite),
		route(http.MethodPost, "/admin/generate_link", api.NeedService, h.generateLink),
		route(http.MethodPost, "/verify", api.NeedKey, h.limit("otp", sc.RateLimitOTP, h.verify)),
		// Mail links are opened by a browser, without the key.
		route(http.MethodGet, "/verify", api.Open, h.limit("otp", sc.RateLimitOTP, h.verifyLink)),
		route(http.MethodGet, "/authorize", api.Open, h.authorize),
		route(http.MethodGet, "/callback", api.Open, h.limit("token", sc.RateLimitToken, h.callback)),
		route(http.MethodGet, "/user", api.NeedUser, h.getUser),
		route(http.MethodPut, "/user", api.NeedUser, h.putUser),
		route(http.MethodPost, "/factors", api.NeedUser, h.enrollFactor),
		route(http.MethodPost, "/factors/{id}/challenge", api.NeedUser, h.challengeFactor),
		route(http.MethodPost, "/factors/{id}/verify", api.NeedUser, h.verifyFactor),
		route(http.MethodDelete, "/factors/{id}", api.NeedUser, h.unenrollFactor),
		route(http.MethodGet, "/admin/users", api.NeedService, h.listUsers),
		route(http.MethodPost, "/admin/users", api.NeedService, h.createUser),
		route(http.MethodGet, "/admin/users/{id}", api.NeedService, h.adminGetUser),
		route(http.MethodPut, "/admin/users/{id}", api.NeedService, h.adminUpdateUser),
		route(http.MethodDelete, "/admin/users/{id}", api.NeedService, h.adminDeleteUser),
	}}
}

func errField(err error) zap.Field { return zap.Error(err) }

func reqField(r *http.Request) zap.Field { return zap.String("request_id", api.RequestID(r)) }

// limit answers 429 over_request_rate_limit, with Retry-After, once the
// client's address has made limit requests to name in the window, on
// whichever nodes. The counters failing lets the request through: a
// broker outage must not lock everyone out.
func (h *handlers) limit(name string, limit int, next http.HandlerFunc) http.HandlerFunc {
	if h.limiter == nil || limit <= 0 {
		return next
	}
	cfg := h.svc.Config()
	return func(w http.ResponseWriter, r *http.Request) {
		ok, retry, err := h.limiter.Allow(r.Context(), name, h.clientIP(r), limit, cfg.RateLimitWindow)
		if err != nil {
			h.log.Warn("rate limit unavailable; admitting", errField(err), reqField(r))
			ok = true
		}
		if !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
			writeError(w, r, newError(http.StatusTooManyRequests, domain.CodeOverRequestRateLimit, "Request rate limit reached"))
			return
		}
		next(w, r)
	}
}

// clientIP is the address requests are counted and recorded under.
func (h *handlers) clientIP(r *http.Request) string {
	if name := h.svc.Config().RateLimitHeader; name != "" {
		if v := r.Header.Get(name); v != "" {
			first, _, _ := strings.Cut(v, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (h *handlers) meta(r *http.Request) domain.RequestMeta {
	host := h.clientIP(r)
	ua := r.UserAgent()
	if len(ua) > 512 {
		ua = ua[:512]
	}
	return domain.RequestMeta{UserAgent: ua, IP: host}
}

// answer writes v, or err through fail.
func (h *handlers) answer(w http.ResponseWriter, r *http.Request, v any, err error, fail func(http.ResponseWriter, *http.Request, error)) {
	if err != nil {
		fail(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, r *http.Request, st int, v any) {
	if modernClient(r) {
		w.Header().Set(apiVersionHeader, apiVersion)
	}
	api.WriteJSON(w, st, v)
}

func (h *handlers) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, map[string]string{
		"version":     h.version,
		"name":        "GoTrue",
		"description": "GoTrue is a user registration and authentication API",
	})
}

// jwks publishes the public keys user tokens may be signed with.
func (h *handlers) jwks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=600")
	writeJSON(w, r, http.StatusOK, map[string]any{"keys": h.svc.Config().JWTKeys.Public()})
}

func (h *handlers) settings(w http.ResponseWriter, r *http.Request) {
	cfg := h.svc.Config()
	external := map[string]bool{"email": true, "phone": false, "anonymous_users": cfg.AnonymousUsers}
	for _, p := range []string{"apple", "azure", "bitbucket", "discord", "facebook", "figma", "fly", "github", "gitlab",
		"google", "keycloak", "kakao", "linkedin", "linkedin_oidc", "notion", "slack", "slack_oidc", "spotify", "twitch",
		"twitter", "workos", "zoom", "snapchat", "saml"} {
		external[p] = false
	}
	if name := h.svc.OIDCName(); name != "" {
		external[name] = true
	}
	writeJSON(w, r, http.StatusOK, map[string]any{
		"external":           external,
		"disable_signup":     cfg.DisableSignup,
		"mailer_autoconfirm": cfg.Autoconfirm,
		"phone_autoconfirm":  false,
		"sms_provider":       "",
		"saml_enabled":       false,
	})
}

// signupRequest is POST /signup's body; the keys auth-js adds
// (gotrue_meta_security, code_challenge, ...) are ignored.
type signupRequest struct {
	Email    string         `json:"email"`
	Phone    string         `json:"phone"`
	Password string         `json:"password"`
	Data     map[string]any `json:"data"`
	pkceRequest
}

// pkceRequest is the challenge auth-js sends in a PKCE flow (null
// otherwise).
type pkceRequest struct {
	CodeChallenge       *string `json:"code_challenge"`
	CodeChallengeMethod *string `json:"code_challenge_method"`
}

// flowMeta is the request's meta with its redirect and PKCE challenge.
func (h *handlers) flowMeta(r *http.Request, p pkceRequest) domain.RequestMeta {
	m := h.meta(r)
	m.RedirectTo = r.URL.Query().Get("redirect_to")
	if p.CodeChallenge != nil {
		m.CodeChallenge = *p.CodeChallenge
	}
	if p.CodeChallengeMethod != nil {
		m.CodeChallengeMethod = *p.CodeChallengeMethod
	}
	return m
}

func (h *handlers) signup(w http.ResponseWriter, r *http.Request) {
	var req signupRequest
	if !decodeInto(w, r, &req) {
		return
	}
	switch {
	case req.Phone != "":
		writeError(w, r, newError(http.StatusUnprocessableEntity, domain.CodePhoneProviderMissing, "Phone signups are disabled"))
		return
	case req.Email == "" && req.Password != "":
		writeError(w, r, validation("To signup, please provide your email"))
		return
	case req.Email == "":
		sess, err := h.svc.SignUpAnonymous(r.Context(), req.Data, h.meta(r))
		if err != nil {
			h.domainError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, sess)
		return
	}
	u, sess, err := h.svc.SignUp(r.Context(), req.Email, req.Password, req.Data, h.flowMeta(r, req.pkceRequest))
	if err != nil {
		h.domainError(w, r, err)
		return
	}
	if sess != nil {
		writeJSON(w, r, http.StatusOK, sess)
		return
	}
	writeJSON(w, r, http.StatusOK, u)
}

type tokenRequest struct {
	Email        string `json:"email"`
	Phone        string `json:"phone"`
	Password     string `json:"password"`
	RefreshToken string `json:"refresh_token"`
	AuthCode     string `json:"auth_code"`
	CodeVerifier string `json:"code_verifier"`
}

func (h *handlers) token(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !decodeInto(w, r, &req) {
		return
	}
	var sess *domain.Session
	var err error
	switch grant := r.URL.Query().Get("grant_type"); grant {
	case "password":
		if req.Phone != "" && req.Email == "" {
			writeError(w, r, newError(http.StatusUnprocessableEntity, domain.CodePhoneProviderMissing, "Phone logins are disabled"))
			return
		}
		if req.Email == "" {
			writeError(w, r, validation("An email address or phone number is required"))
			return
		}
		sess, err = h.svc.PasswordGrant(r.Context(), req.Email, req.Password, h.meta(r))
	case "refresh_token":
		sess, err = h.svc.RefreshGrant(r.Context(), req.RefreshToken)
	case "pkce":
		sess, err = h.svc.PKCEGrant(r.Context(), req.AuthCode, req.CodeVerifier, h.meta(r))
	default:
		writeError(w, r, validation(fmt.Sprintf("unsupported_grant_type: %.40q", grant)))
		return
	}
	h.answer(w, r, sess, err, h.domainError)
}

func (h *handlers) logout(w http.ResponseWriter, r *http.Request) {
	scope := domain.ScopeGlobal
	switch s := r.URL.Query().Get("scope"); s {
	case "", "global":
	case "local":
		scope = domain.ScopeLocal
	case "others":
		scope = domain.ScopeOthers
	default:
		writeError(w, r, validation("Unsupported logout scope "+strconv.Quote(s)))
		return
	}
	c := api.Claims(r)
	if err := h.svc.Logout(r.Context(), c.Subject, c.SessionID, scope); err != nil {
		h.domainError(w, r, err)
		return
	}
	if modernClient(r) {
		w.Header().Set(apiVersionHeader, apiVersion)
	}
	w.WriteHeader(http.StatusNoContent)
}

// userError answers the user endpoints' refusals: a token whose user or
// session is gone is a 403 there, as GoTrue answers it.
func (h *handlers) userError(w http.ResponseWriter, r *http.Request, err error) {
	if e, ok := domain.AsError(err); ok && (e.Code == domain.CodeUserNotFound || e.Code == domain.CodeSessionNotFound) {
		writeError(w, r, newError(http.StatusForbidden, e.Code, e.Message))
		return
	}
	h.domainError(w, r, err)
}

func (h *handlers) getUser(w http.ResponseWriter, r *http.Request) {
	c := api.Claims(r)
	u, err := h.svc.User(r.Context(), c.Subject, c.SessionID)
	h.answer(w, r, u, err, h.userError)
}

type userUpdateRequest struct {
	Email    *string        `json:"email"`
	Password *string        `json:"password"`
	Phone    *string        `json:"phone"`
	Data     map[string]any `json:"data"`
	Nonce    *string        `json:"nonce"`
}

func (h *handlers) putUser(w http.ResponseWriter, r *http.Request) {
	var req userUpdateRequest
	if !decodeInto(w, r, &req) {
		return
	}
	c := api.Claims(r)
	u, err := h.svc.UpdateUser(r.Context(), c.Subject, c.SessionID, domain.UserUpdate{
		Email: req.Email, Password: req.Password, Phone: req.Phone, Data: req.Data,
	})
	h.answer(w, r, u, err, h.userError)
}

// adminUserRequest is the body of the admin API's create and update.
type adminUserRequest struct {
	Email        *string        `json:"email"`
	Phone        *string        `json:"phone"`
	Password     *string        `json:"password"`
	PasswordHash *string        `json:"password_hash"`
	EmailConfirm *bool          `json:"email_confirm"`
	PhoneConfirm *bool          `json:"phone_confirm"`
	UserMetadata map[string]any `json:"user_metadata"`
	AppMetadata  map[string]any `json:"app_metadata"`
	Role         *string        `json:"role"`
	BanDuration  *string        `json:"ban_duration"`
}

func (a adminUserRequest) domain() domain.AdminUser {
	return domain.AdminUser{Email: a.Email, Phone: a.Phone, Password: a.Password, PasswordHash: a.PasswordHash,
		EmailConfirm: a.EmailConfirm, PhoneConfirm: a.PhoneConfirm, UserMetadata: a.UserMetadata,
		AppMetadata: a.AppMetadata, Role: a.Role, BanDuration: a.BanDuration}
}

func (h *handlers) createUser(w http.ResponseWriter, r *http.Request) {
	var req adminUserRequest
	if !decodeInto(w, r, &req) {
		return
	}
	u, err := h.svc.CreateUser(r.Context(), req.domain())
	h.answer(w, r, u, err, h.domainError)
}

// maxPerPage bounds a page of the admin list.
const maxPerPage = 1000

func pageParam(r *http.Request, name string, def int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 1
}

func (h *handlers) listUsers(w http.ResponseWriter, r *http.Request) {
	page, ok1 := pageParam(r, "page", 1)
	perPage, ok2 := pageParam(r, "per_page", 50)
	if !ok1 || !ok2 || perPage > maxPerPage || page > math.MaxInt32 {
		writeError(w, r, errBadPagination)
		return
	}
	users, total, err := h.svc.ListUsers(r.Context(), page, perPage)
	if err != nil {
		h.domainError(w, r, err)
		return
	}
	// auth-js reads the page as the one character after the link's first
	// '=', so page comes first.
	last := (total + perPage - 1) / perPage
	var links []string
	if page < last {
		links = append(links, fmt.Sprintf(`<%s?page=%d&per_page=%d>; rel="next"`, r.URL.Path, page+1, perPage))
	}
	links = append(links, fmt.Sprintf(`<%s?page=%d&per_page=%d>; rel="last"`, r.URL.Path, last, perPage))
	w.Header().Set("Link", strings.Join(links, ", "))
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	if users == nil {
		users = []*domain.User{}
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"users": users, "aud": domain.RoleAuthenticated})
}

func (h *handlers) adminGetUser(w http.ResponseWriter, r *http.Request) {
	u, err := h.svc.GetUser(r.Context(), chi.URLParam(r, "id"))
	h.answer(w, r, u, err, h.domainError)
}

func (h *handlers) adminUpdateUser(w http.ResponseWriter, r *http.Request) {
	var req adminUserRequest
	if !decodeInto(w, r, &req) {
		return
	}
	u, err := h.svc.AdminUpdateUser(r.Context(), chi.URLParam(r, "id"), req.domain())
	h.answer(w, r, u, err, h.domainError)
}

func (h *handlers) adminDeleteUser(w http.ResponseWriter, r *http.Request) {
	if err := h.svc.DeleteUser(r.Context(), chi.URLParam(r, "id")); err != nil {
		h.domainError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{})
}

type enrollRequest struct {
	FactorType   string `json:"factor_type"`
	FriendlyName string `json:"friendly_name"`
	Issuer       string `json:"issuer"`
}

func (h *handlers) enrollFactor(w http.ResponseWriter, r *http.Request) {
	var req enrollRequest
	if !decodeInto(w, r, &req) {
		return
	}
	if req.FactorType != "totp" {
		writeError(w, r, newError(http.StatusUnprocessableEntity, domain.CodeValidationFailed, "factor_type must be totp"))
		return
	}
	c := api.Claims(r)
	e, err := h.svc.EnrollTOTP(r.Context(), c.Subject, req.FriendlyName, req.Issuer)
	h.answer(w, r, e, err, h.userError)
}

func (h *handlers) challengeFactor(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if !decodeInto(w, r, &req) {
		return
	}
	c, err := h.svc.ChallengeFactor(r.Context(), api.Claims(r).Subject, chi.URLParam(r, "id"), h.meta(r))
	h.answer(w, r, c, err, h.userError)
}

type verifyFactorRequest struct {
	ChallengeID string `json:"challenge_id"`
	Code        string `json:"code"`
}

func (h *handlers) verifyFactor(w http.ResponseWriter, r *http.Request) {
	var req verifyFactorRequest
	if !decodeInto(w, r, &req) {
		return
	}
	c := api.Claims(r)
	sess, err := h.svc.VerifyFactor(r.Context(), c.Subject, c.SessionID, chi.URLParam(r, "id"), req.ChallengeID, req.Code)
	h.answer(w, r, sess, err, h.userError)
}

func (h *handlers) unenrollFactor(w http.ResponseWriter, r *http.Request) {
	c := api.Claims(r)
	id := chi.URLParam(r, "id")
	err := h.svc.UnenrollFactor(r.Context(), c.Subject, c.SessionID, id)
	h.answer(w, r, map[string]string{"id": id}, err, h.userError)
}

type recoverRequest struct {
	Email string `json:"email"`
	pkceRequest
}

func (h *handlers) recover(w http.ResponseWriter, r *http.Request) {
	var req recoverRequest
	if !decodeInto(w, r, &req) {
		return
	}
	err := h.svc.Recover(r.Context(), req.Email, h.flowMeta(r, req.pkceRequest))
	h.answer(w, r, map[string]any{}, err, h.domainError)
}

type otpRequest struct {
	Email      string         `json:"email"`
	Phone      string         `json:"phone"`
	CreateUser *bool          `json:"create_user"`
	Data       map[string]any `json:"data"`
	pkceRequest
}

func (h *handlers) otp(w http.ResponseWriter, r *http.Request) {
	var req otpRequest
	if !decodeInto(w, r, &req) {
		return
	}
	if req.Phone != "" {
		writeError(w, r, newError(http.StatusUnprocessableEntity, domain.CodePhoneProviderMissing, "Phone logins are disabled"))
		return
	}
	create := req.CreateUser == nil || *req.CreateUser
	err := h.svc.SendOTP(r.Context(), req.Email, create, req.Data, h.flowMeta(r, req.pkceRequest))
	h.answer(w, r, map[string]any{}, err, h.domainError)
}

type verifyRequest struct {
	Type      string `json:"type"`
	Email     string `json:"email"`
	Token     string `json:"token"`
	TokenHash string `json:"token_hash"`
}

func (h *handlers) verify(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if !decodeInto(w, r, &req) {
		return
	}
	if req.TokenHash == "" && (req.Email == "" || req.Token == "") {
		writeError(w, r, validation("Verify requires either a token_hash, or an email and a token"))
		return
	}
	v, err := h.svc.Verify(r.Context(), req.Type, req.Email, req.Token, req.TokenHash, h.meta(r))
	if err != nil {
		h.domainError(w, r, err)
		return
	}
	if v.Session == nil {
		writeJSON(w, r, http.StatusOK, map[string]string{"code": v.AuthCode})
		return
	}
	writeJSON(w, r, http.StatusOK, v.Session)
}

// verifyLink redeems a mail link and sends the browser on with 303: the
// session in the fragment, as GoTrue does outside PKCE, ?code= under
// PKCE, or the error in the fragment.
func (h *handlers) verifyLink(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	target := h.svc.RedirectTarget(q.Get("redirect_to"))
	v, err := h.svc.Verify(r.Context(), q.Get("type"), "", "", q.Get("token"), h.meta(r))
	if err == nil && v.Session == nil {
		if target == "" {
			writeJSON(w, r, http.StatusOK, map[string]string{"code": v.AuthCode})
			return
		}
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		http.Redirect(w, r, target+sep+url.Values{"code": {v.AuthCode}}.Encode(), http.StatusSeeOther)
		return
	}
	if err != nil {
		h.landWithSession(w, r, target, nil, "", err)
		return
	}
	h.landWithSession(w, r, target, v.Session, v.Type, nil)
}

// landWithSession sends the browser to target with the session (or the
// error) in the fragment, as GoTrue does; without a target it answers
// the fragment as JSON.
func (h *handlers) landWithSession(w http.ResponseWriter, r *http.Request, target string, sess *domain.Session, typ string, err error) {
	frag := url.Values{}
	if err != nil {
		e, ok := domain.AsError(err)
		if !ok {
			h.log.Error("sign-in by link failed", errField(err), reqField(r))
			e = &domain.Error{Code: domain.CodeUnexpectedFailure, Message: "Unexpected failure"}
		}
		frag.Set("error", "access_denied")
		frag.Set("error_code", string(e.Code))
		frag.Set("error_description", e.Message)
	} else {
		frag.Set("access_token", sess.AccessToken)
		frag.Set("token_type", sess.TokenType)
		frag.Set("expires_in", strconv.FormatInt(sess.ExpiresIn, 10))
		frag.Set("expires_at", strconv.FormatInt(sess.ExpiresAt, 10))
		frag.Set("refresh_token", sess.RefreshToken)
		if typ != "" {
			frag.Set("type", typ)
		}
	}
	if target == "" {
		writeJSON(w, r, http.StatusOK, map[string]string{"fragment": frag.Encode()})
		return
	}
	http.Redirect(w, r, target+"#"+frag.Encode(), http.StatusSeeOther)
}

func (h *handlers) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	to, err := h.svc.AuthorizeURL(r.Context(), q.Get("provider"), q.Get("redirect_to"))
	if err != nil {
		h.domainError(w, r, err)
		return
	}
	http.Redirect(w, r, to, http.StatusFound)
}

func (h *handlers) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		h.landWithSession(w, r, h.svc.RedirectTarget(""), nil, "", &domain.Error{Code: domain.CodeOAuthFailed,
			Message: fmt.Sprintf("%.40s: %.200s", e, q.Get("error_description"))})
		return
	}
	sess, target, err := h.svc.Callback(r.Context(), q.Get("code"), q.Get("state"), h.meta(r))
	if e, ok := domain.AsError(err); ok && e.Code == domain.CodeBadOAuthState {
		writeError(w, r, newError(http.StatusBadRequest, e.Code, e.Message))
		return
	}
	h.landWithSession(w, r, target, sess, "", err)
}

type resendRequest struct {
	Type  string `json:"type"`
	Email string `json:"email"`
	pkceRequest
}

func (h *handlers) resend(w http.ResponseWriter, r *http.Request) {
	var req resendRequest
	if !decodeInto(w, r, &req) {
		return
	}
	err := h.svc.Resend(r.Context(), req.Type, req.Email, h.flowMeta(r, req.pkceRequest))
	h.answer(w, r, map[string]any{}, err, h.domainError)
}

type inviteRequest struct {
	Email string         `json:"email"`
	Data  map[string]any `json:"data"`
}

func (h *handlers) invite(w http.ResponseWriter, r *http.Request) {
	var req inviteRequest
	if !decodeInto(w, r, &req) {
		return
	}
	u, err := h.svc.Invite(r.Context(), req.Email, req.Data, h.flowMeta(r, pkceRequest{}))
	h.answer(w, r, u, err, h.domainError)
}

type generateLinkRequest struct {
	Type       string         `json:"type"`
	Email      string         `json:"email"`
	Password   string         `json:"password"`
	Data       map[string]any `json:"data"`
	RedirectTo string         `json:"redirect_to"`
}

func (h *handlers) generateLink(w http.ResponseWriter, r *http.Request) {
	var req generateLinkRequest
	if !decodeInto(w, r, &req) {
		return
	}
	meta := h.flowMeta(r, pkceRequest{})
	if req.RedirectTo != "" {
		meta.RedirectTo = req.RedirectTo
	}
	l, err := h.svc.GenerateLink(r.Context(), req.Type, req.Email, req.Password, req.Data, meta)
	h.answer(w, r, l, err, h.domainError)
}
