-- Fixes found by the property tests (tests/property/).

-- job_schedule_timezone_error: PostgreSQL's `timezone` setting also takes POSIX TZ strings
-- ('Foo/Bar5' is a zone called Foo/Bar, 5 hours west of UTC), so the probe accepted
-- 'FOO/BAR5' and answered "did you mean 'FOO/BAR5'?" for 'Foo/Bar5', where
-- worker/scheduler.py's timezone_error() (which the scheduler relies on) refuses both as
-- unknown: a schedule stored with such a timezone never ran. Every POSIX string has a digit
-- (its offset), so for names with a digit the setting's canonical name must also be in the
-- list of zones; reading that list takes tens of milliseconds, hence only then.
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
  unknown := format('unknown timezone ''%s'': use an IANA name such as UTC or Europe/London', tz);
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
    return format('unknown timezone ''%s'': did you mean ''%s''?', tz, canonical);
  end if;
  return null;
end;
$$;
