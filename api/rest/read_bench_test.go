package rest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fluxbase/fluxbase/api"
	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/apitest"
	"github.com/fluxbase/fluxbase/pgrole"
)

// BenchmarkRESTRead reads one row by primary key as anon, as bench/rest
// does, through the edge and the surface, with the roles' settings
// applied (anon's statement_timeout) or not.
func BenchmarkRESTRead(b *testing.B) {
	pool := apitest.NewDB(b, `
create table items (id int primary key, title text, done boolean);
grant select on items to anon;
insert into items select g, 'item ' || g, false from generate_series(1, 10000) g;`)
	roles, err := pgrole.LoadRoles(context.Background(), pool)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		roles *pgrole.Roles
	}{{"role-settings", roles}, {"no-role-settings", nil}} {
		b.Run(c.name, func(b *testing.B) {
			srv := httptest.NewServer(api.New(api.Config{Surfaces: []api.Surface{New(Config{Pool: pool, Roles: c.roles})}},
				apitest.Verifier(b), zap.NewNop(), prometheus.NewRegistry()))
			defer srv.Close()
			anon := apitest.Key(b, auth.RoleAnon)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/rest/v1/items?select=*&id=eq.%d", srv.URL, i%10000+1), nil)
					req.Header.Set("apikey", anon)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
