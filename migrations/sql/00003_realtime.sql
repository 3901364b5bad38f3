-- Realtime's authorization of private channels, as in Supabase: a client
-- may join a private channel when a row-level policy on realtime.messages
-- lets its role and claims SELECT a row of that topic (extension
-- 'broadcast' or 'presence'), and may send on it when a policy lets it
-- INSERT one. Policies read the channel's name with realtime.topic().
-- The server checks by inserting probe rows and rolling them back; the
-- table holds nothing otherwise.

-- +goose Up
create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

create table if not exists realtime.messages (
  id uuid primary key default gen_random_uuid(),
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp not null default now(),
  inserted_at timestamp not null default now()
);
alter table realtime.messages enable row level security;
grant select, insert, update, delete on realtime.messages to anon, authenticated, service_role;

-- +goose StatementBegin
create or replace function realtime.topic() returns text
language sql stable as $$
  select nullif(current_setting('realtime.topic', true), '')::text
$$;
-- +goose StatementEnd
grant execute on function realtime.topic() to anon, authenticated, service_role;

-- +goose Down
drop function if exists realtime.topic();
drop table if exists realtime.messages;
drop schema if exists realtime;
