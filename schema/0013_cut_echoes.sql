-- Refusals never echo an argument whole: a 10 MB schedule name, task type, queue or
-- timezone came back as a 10 MB error (and a 10 MB line in the server's log). The
-- validators that put a value into their message now quote at most its first 64
-- characters, then '...'; shorter values read exactly as before, in the words of
-- worker/scheduler.py. The definers that raise these problems (job_schedule_create,
-- _update, _retime, and the job_schedules trigger for direct writes) are cut by this
-- alone. job_schedule_cron_error refuses a cron past 200 characters before it quotes
-- any of it; the other definers already quote through job_queue_shown() (0009).
-- CREATE OR REPLACE keeps each function's owner, attributes and grants.
-- Written for PostgreSQL 14 through 18.

create or replace function job_schedule_timezone_error(tz text)
  returns text
  language plpgsql
  stable
  set search_path = pg_catalog
  set timezone = 'UTC'
as $$
declare
  head      text;
  unknown   text;
  canonical text;
begin
  if tz is null or tz = '' then
    return 'a timezone is required';
  end if;
  unknown := format('unknown timezone ''%s'': use an IANA name such as UTC or Europe/London',
                    case when length(tz) > 64 then left(tz, 64) || '...' else tz end);
  head := split_part(tz, '/', 1);
  -- POSIX TZ strings (UTC+3, EST5) are not zones; a few real zone names have digits.
  if tz !~ '^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$'
     or (head ~ '[0-9+]'
         and head not in ('EST5EDT', 'CST6CDT', 'MST7MDT', 'PST8PDT', 'GMT0', 'GMT+0', 'GMT-0'))
     or lower(head) in ('posix', 'right', 'localtime', 'posixrules') then
    return unknown;
  end if;
  begin
    perform set_config('timezone', tz, true);
  exception when invalid_parameter_value then
    return unknown;
  end;
  canonical := current_setting('timezone');
  if tz ~ '[0-9]' and not exists (select 1 from pg_timezone_names z where z.name = canonical) then
    return unknown;
  end if;
  if canonical <> tz then
    return format('unknown timezone ''%s'': did you mean ''%s''?',
                  case when length(tz) > 64 then left(tz, 64) || '...' else tz end, canonical);
  end if;
  return null;
end;
$$;

create or replace function job_schedule_problem(
  name         text,
  cron         text,
  timezone     text,
  task_type    text,
  payload      jsonb,
  queue        text,
  priority     integer,
  max_attempts integer,
  missed       text
) returns text
  language plpgsql
  stable
  set search_path = pg_catalog
as $$
declare
  problem text;
begin
  if name is null then
    return 'a schedule name is required';
  elsif name !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    return format('invalid schedule name ''%s'': use 1-128 of A-Z a-z 0-9 _ . : -',
                  case when length(name) > 64 then left(name, 64) || '...' else name end);
  end if;
  problem := public.job_schedule_cron_error(cron);
  if problem is not null then
    return case when cron is null then problem
                else format('invalid cron expression ''%s'': %s',
                            case when length(cron) > 64 then left(cron, 64) || '...' else cron end,
                            problem) end;
  end if;
  problem := public.job_schedule_timezone_error(timezone);
  if problem is not null then
    return problem;
  end if;
  if task_type is null then
    return 'a task type is required';
  elsif task_type !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    return format('invalid task type ''%s'': use 1-128 of A-Z a-z 0-9 _ . : -',
                  case when length(task_type) > 64 then left(task_type, 64) || '...' else task_type end);
  end if;
  if payload is null or jsonb_typeof(payload) <> 'object' then
    return 'payload must be a JSON object';
  end if;
  if queue is null then
    return 'a queue is required';
  elsif queue !~ '^[A-Za-z0-9_.:-]{1,64}$' then
    return format('invalid queue name ''%s'': use 1-64 of A-Z a-z 0-9 _ . : -',
                  case when length(queue) > 64 then left(queue, 64) || '...' else queue end);
  end if;
  if priority is null or priority not between -1000 and 1000 then
    return 'priority must be between -1000 and 1000';
  end if;
  if max_attempts is not null and max_attempts not between 1 and 1000 then
    return 'max_attempts must be between 1 and 1000';
  end if;
  if missed is null or missed not in ('latest', 'skip', 'all') then
    return format('invalid missed-tick policy ''%s'': use latest, skip or all',
                  case when length(missed) > 64 then left(missed, 64) || '...' else missed end);
  end if;
  return null;
end;
$$;
