-- The database roles requests run as, Supabase-style: anon (no token or the
-- anon key), authenticated (a signed-in user), service_role (full access,
-- bypasses row-level security), and authenticator, the login role a
-- deployment may give the server, which can switch to the other three.
-- Roles belong to the whole cluster, so each is created only if missing
-- (several databases of one cluster may migrate at the same moment).

-- +goose Up
-- +goose StatementBegin
do $$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    begin
      execute format('create role %I nologin noinherit', r);
    exception when duplicate_object or unique_violation then null;
    end;
  end loop;
  begin
    create role authenticator login noinherit;
  exception when duplicate_object or unique_violation then null;
  end;
  -- Requires superuser; a deployment without one grants BYPASSRLS itself.
  -- Another database of the cluster migrating at the same moment may be
  -- changing the same role ("tuple concurrently updated", XX000): its
  -- change is the same as ours, so that is not an error.
  begin
    alter role service_role bypassrls;
  exception
    when insufficient_privilege then
      raise notice 'service_role keeps row-level security: BYPASSRLS needs a superuser';
    when internal_error then null;
  end;
  foreach r in array array['authenticator', current_user::text] loop
    begin
      execute format('grant anon, authenticated, service_role to %I', r);
    exception when unique_violation or internal_error then null;
    end;
  end loop;
end
$$;
-- +goose StatementEnd

grant usage on schema public to anon, authenticated, service_role;
grant all on all tables in schema public to anon, authenticated, service_role;
grant all on all sequences in schema public to anon, authenticated, service_role;
grant all on all functions in schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;

-- +goose Down
alter default privileges in schema public revoke all on tables from anon, authenticated, service_role;
alter default privileges in schema public revoke all on sequences from anon, authenticated, service_role;
alter default privileges in schema public revoke all on functions from anon, authenticated, service_role;
revoke usage on schema public from anon, authenticated, service_role;
