package e2e

import (
	"testing"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/s3test"
	"github.com/fluxbase/fluxbase/node"
	"github.com/fluxbase/fluxbase/storage"
)

// storagePoliciesSQL is what node/storage.test.mjs expects: in the
// private bucket e2e-docs (made by the test), each user reads and writes
// the folder named by their id.
const storagePoliciesSQL = `
create policy e2e_own_read on storage.objects for select to authenticated
  using (bucket_id = 'e2e-docs' and (storage.foldername(name))[1] = auth.uid()::text);
create policy e2e_own_insert on storage.objects for insert to authenticated
  with check (bucket_id = 'e2e-docs' and (storage.foldername(name))[1] = auth.uid()::text and owner_id = auth.uid()::text);
create policy e2e_own_update on storage.objects for update to authenticated
  using (bucket_id = 'e2e-docs' and (storage.foldername(name))[1] = auth.uid()::text);
create policy e2e_own_delete on storage.objects for delete to authenticated
  using (bucket_id = 'e2e-docs' and (storage.foldername(name))[1] = auth.uid()::text);
create policy e2e_see_buckets on storage.buckets for select to authenticated using (true);
`

// TestSupabaseJSStorage runs node/storage.test.mjs, storage-js's every
// call, against two nodes that share their storage: once on local files
// (one folder, declared shared), once on S3 (a versitygw the test
// starts). Uploads go through one node and downloads through the other.
func TestSupabaseJSStorage(t *testing.T) {
	t.Parallel()
	nodeBin, dir := nodeTests(t)
	providers := map[string]func(t *testing.T) storage.Config{
		"local": func(t *testing.T) storage.Config {
			return storage.Config{Provider: storage.ProviderLocal, LocalPath: t.TempDir(), LocalShared: true}
		},
		"s3": func(t *testing.T) storage.Config {
			s, err := s3test.Start()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Stop)
			return storage.Config{Provider: storage.ProviderS3, S3: s.Config("fluxbase-e2e")}
		},
	}
	for name, provider := range providers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sc := provider(t)
			c := startClusterWith(t, storagePoliciesSQL, func(_ int, cfg *node.Config) { cfg.Storage = sc })
			anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
			service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
			runNodeScripts(t, nodeBin, dir, []string{"storage.test.mjs"},
				"FLUXBASE_A="+c.a, "FLUXBASE_B="+c.b, "ANON_KEY="+anon, "SERVICE_KEY="+service, "DATABASE_URL="+c.url,
				"STORAGE_A_ID="+userA, "STORAGE_A_TOKEN="+userToken(t, userA),
				"STORAGE_B_ID="+userB, "STORAGE_B_TOKEN="+userToken(t, userB))
		})
	}
}
