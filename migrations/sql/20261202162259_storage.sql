-- Storage's metadata, as in Supabase: buckets and objects, the path
-- helpers policies use, and row-level security enabled with no policies,
-- so an app decides who reads and writes which objects by writing its
-- own (the service role bypasses them). An object's bytes live in the
-- storage backend under <bucket_id>/<name>/<version>; a row names the
-- version that is current.

-- +goose Up
create schema if not exists storage;
grant usage on schema storage to anon, authenticated, service_role;

create table if not exists storage.buckets (
  id text primary key,
  name text not null,
  owner uuid,
  owner_id text,
  public boolean not null default false,
  file_size_limit bigint,
  allowed_mime_types text[],
  type text not null default 'STANDARD',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create unique index if not exists bname on storage.buckets (name);

create table if not exists storage.objects (
  id uuid primary key default gen_random_uuid(),
  bucket_id text references storage.buckets (id),
  name text,
  owner uuid,
  owner_id text,
  metadata jsonb,
  path_tokens text[] generated always as (pg_catalog.string_to_array(name, '/')) stored,
  version text,
  user_metadata jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_accessed_at timestamptz not null default now()
);
create unique index if not exists bucketid_objname on storage.objects (bucket_id, name);
create index if not exists name_prefix_search on storage.objects (bucket_id, name text_pattern_ops);

alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;

-- Bytes no row names yet, or no longer: the versions of uploads in
-- flight (kind 'upload', written before their bytes and removed when a
-- row names them) and the versions rows stopped naming (kind
-- 'replaced', written by the trigger below in the same transaction as
-- the update or delete), and cached image renditions (kind 'render',
-- version '<source version>.render/<options>'). The node deletes
-- replaced bytes at once; the collector deletes what a crash left and
-- renditions of versions gone. No API role may read it.
create table if not exists storage.fluxbase_pending (
  bucket_id text not null,
  name text not null,
  version text not null,
  kind text not null check (kind in ('upload', 'replaced', 'render')),
  created_at timestamptz not null default now(),
  primary key (bucket_id, name, version)
);
revoke all on storage.fluxbase_pending from public;

-- +goose StatementBegin
create or replace function storage.fluxbase_track_versions() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op in ('UPDATE', 'DELETE') and old.version is not null
     and (tg_op = 'DELETE' or (old.bucket_id, old.name, old.version) is distinct from (new.bucket_id, new.name, new.version)) then
    insert into storage.fluxbase_pending (bucket_id, name, version, kind)
      values (old.bucket_id, old.name, old.version, 'replaced') on conflict do nothing;
  end if;
  if tg_op in ('INSERT', 'UPDATE') and new.version is not null then
    delete from storage.fluxbase_pending p
      where p.bucket_id = new.bucket_id and p.name = new.name and p.version = new.version;
  end if;
  return null;
end
$$;
-- +goose StatementEnd
revoke all on function storage.fluxbase_track_versions() from public;
create trigger fluxbase_track_versions after insert or update or delete on storage.objects
  for each row execute function storage.fluxbase_track_versions();

-- Resumable (TUS) uploads in progress: what the creation said, and how
-- many bytes have arrived, as parts in the backend at
-- <bucket>/<name>/<id>.tus/<offset> (recorded as uploads in
-- fluxbase_pending). Any node may take the next chunk.
create table if not exists storage.fluxbase_tus (
  id uuid primary key,
  bucket_id text not null,
  name text not null,
  owner text not null default '',
  upsert boolean not null,
  length bigint not null,
  received bigint not null default 0,
  parts bigint[] not null default '{}',
  content_type text not null,
  cache_control text not null,
  user_metadata jsonb,
  created_at timestamptz not null default now()
);
revoke all on storage.fluxbase_tus from public;

-- The folders of a name, its last segment, and that segment's extension:
-- storage.foldername('a/b/c.png') = {a,b}, filename = 'c.png',
-- extension = 'png'.
-- +goose StatementBegin
create or replace function storage.foldername(name text) returns text[]
language sql immutable as $$
  select (pg_catalog.string_to_array(name, '/'))[1:pg_catalog.cardinality(pg_catalog.string_to_array(name, '/')) - 1]
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create or replace function storage.filename(name text) returns text
language sql immutable as $$
  select (pg_catalog.string_to_array(name, '/'))[pg_catalog.cardinality(pg_catalog.string_to_array(name, '/'))]
$$;
-- +goose StatementEnd

-- +goose StatementBegin
create or replace function storage.extension(name text) returns text
language sql immutable as $$
  select case when pg_catalog.strpos(storage.filename(name), '.') > 0
    then pg_catalog.reverse(pg_catalog.split_part(pg_catalog.reverse(storage.filename(name)), '.', 1))
    else '' end
$$;
-- +goose StatementEnd

grant execute on function storage.foldername(text), storage.filename(text), storage.extension(text)
  to anon, authenticated, service_role;

-- +goose Down
drop trigger if exists fluxbase_track_versions on storage.objects;
drop function if exists storage.fluxbase_track_versions();
drop table if exists storage.fluxbase_pending;
drop table if exists storage.fluxbase_tus;
drop function if exists storage.extension(text);
drop function if exists storage.filename(text);
drop function if exists storage.foldername(text);
drop table if exists storage.objects;
drop table if exists storage.buckets;
drop schema if exists storage;
