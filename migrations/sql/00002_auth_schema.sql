-- The auth schema's helpers, as in Supabase: policies call auth.uid(),
-- auth.role() and auth.jwt(), which read the claims the server sets for each
-- request with set_config('request.jwt.claims', <json>, true).

-- +goose Up
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

-- +goose StatementBegin
create or replace function auth.jwt() returns jsonb
language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create or replace function auth.uid() returns uuid
language sql stable as $$
  select nullif(coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    auth.jwt() ->> 'sub'), '')::uuid
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create or replace function auth.role() returns text
language sql stable as $$
  select nullif(coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    auth.jwt() ->> 'role'), '')
$$;
-- +goose StatementEnd

grant execute on function auth.jwt(), auth.uid(), auth.role() to anon, authenticated, service_role;

-- +goose Down
drop function if exists auth.role();
drop function if exists auth.uid();
drop function if exists auth.jwt();
drop schema if exists auth;
