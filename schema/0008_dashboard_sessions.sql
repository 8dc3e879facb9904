-- Dashboard sessions kept server-side, so that logging out ends a session for good: a copied
-- session cookie is refused once its session is revoked (the cookie, signed with a key
-- derived from WORKER_DASHBOARD_USERS, also dies with any password change).
-- Written for PostgreSQL 14 through 18.

create table if not exists job_dashboard_sessions (
  -- SHA-256 of the session id the cookie carries: a read of this table does not hand out
  -- sessions.
  id_sha256   bytea       primary key,
  user_name   text        not null,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  revoked_at  timestamptz,
  remote_addr text
);
create index if not exists job_dashboard_sessions_expires_idx
  on job_dashboard_sessions (expires_at);
alter table job_dashboard_sessions enable row level security;

do $$
begin
  if exists (select 1 from pg_roles where rolname = 'anon') then
    revoke all on job_dashboard_sessions from anon;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    revoke all on job_dashboard_sessions from authenticated;
  end if;
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant all on job_dashboard_sessions to service_role;
  end if;
end;
$$;
