-- Statement timeouts of the roles requests run as, as on Supabase: anon 3 s,
-- authenticated 8 s (service_role keeps none). A role's settings are not
-- applied by SET ROLE, so the server reads them from pg_db_role_setting and
-- sets them local to each request's transaction (see package pgrole); a
-- deployment changes them with ALTER ROLE ... SET and every node picks the
-- change up within its refresh interval. Roles belong to the whole cluster:
-- another database of it migrating at the same moment may be changing the
-- same role ("tuple concurrently updated", XX000), with the same change.

-- +goose Up
-- +goose StatementBegin
do $$
begin
  begin
    alter role anon set statement_timeout = '3s';
  exception when internal_error then null;
  end;
  begin
    alter role authenticated set statement_timeout = '8s';
  exception when internal_error then null;
  end;
end
$$;
-- +goose StatementEnd

-- +goose Down
alter role anon reset statement_timeout;
alter role authenticated reset statement_timeout;
