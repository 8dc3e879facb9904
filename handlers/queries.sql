-- Every SQL statement the bundled handlers run, by name (worker.queries.load("handlers",
-- "queries.sql")). The tables are the reference set's (schema/reference/), which use the
-- apps' own names; README.md ("The business handlers") lists the columns each handler needs.
-- A table an app may keep under another name (HANDLERS_TABLES) is written `{queue}`, its
-- columns `{queue.date}`: handlers/tables.py fills them in with what PostgreSQL resolved
-- and quoted. A test PREPAREs each statement against the reference schema. The only other
-- SQL text built at run time is in handlers/sqlnames.py, from allow-listed names that
-- PostgreSQL itself resolved and quoted.

-- name: db_now
SELECT now();

-- ---------------------------------------------------------------------------------------
-- allow-listed names (refresh_metrics, sync_wearables)

-- name: resolve_matview
-- The materialized view named $1; whether REFRESH ... CONCURRENTLY is allowed (populated,
-- and a valid unique index on plain columns without a WHERE clause).
SELECT c.oid::regclass::text AS name,
       c.relispopulated AS populated,
       EXISTS (SELECT 1
                 FROM pg_index i
                WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
                  AND i.indpred IS NULL AND i.indexprs IS NULL) AS has_unique_index
  FROM pg_class c
 WHERE c.oid = to_regclass($1::text) AND c.relkind = 'm';

-- name: resolve_function
-- The argument-less function (not a procedure or aggregate) named $1, printed by PostgreSQL
-- as a call: `name()`.
SELECT p.oid::bigint AS oid,
       p.oid::regprocedure::text AS call,
       p.prorettype::regtype::text AS returns,
       p.proretset AS returns_set
  FROM pg_proc p
 WHERE p.oid = to_regprocedure($1::text || '()') AND p.prokind = 'f';

-- name: resolve_table
-- The relation named $1 as PostgreSQL prints it, its kind, and for each column name of $2
-- (matched exactly) the column as quote_ident prints it, or null when it has none.
SELECT c.oid::regclass::text AS name,
       c.relkind::text AS kind,
       ARRAY(SELECT (SELECT quote_ident(a.attname::text)
                       FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attname = w.name
                        AND a.attnum > 0 AND NOT a.attisdropped)
               FROM unnest($2::text[]) WITH ORDINALITY AS w(name, ord)
              ORDER BY w.ord) AS columns
  FROM pg_class c
 WHERE c.oid = to_regclass($1::text);

-- name: set_statement_timeout
-- For the rest of this transaction only (also through a transaction-mode pooler).
SELECT set_config('statement_timeout', $1::text, true);

-- ---------------------------------------------------------------------------------------
-- sync_wearables

-- name: wearable_connections
-- Active connections of provider $1, of user $2 only when it is not null.
SELECT id, user_id, external_user_id, sync_cursor
  FROM wearable_connections
 WHERE active AND provider = $1 AND ($2::uuid IS NULL OR user_id = $2::uuid)
 ORDER BY id;

-- name: advance_wearable_cursor
-- Compare-and-set connection $1's cursor from $2 to $3, and lock the row until commit. No
-- row back: another run moved it first, and this page must not be written.
UPDATE wearable_connections
   SET sync_cursor = $3::text, last_synced_at = now()
 WHERE id = $1 AND sync_cursor IS NOT DISTINCT FROM $2::text
RETURNING id;

-- name: upsert_wearable_samples
-- Insert or update one page of samples of connection $1 (user $2); returns a row per sample
-- that is new or changed (an identical re-delivery writes nothing).
INSERT INTO wearable_samples AS s
       (connection_id, user_id, external_id, kind, started_at, ended_at, value, unit)
SELECT $1, $2, t.external_id, t.kind, t.started_at, t.ended_at, t.value, t.unit
  FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::float8[],
              $8::text[]) AS t(external_id, kind, started_at, ended_at, value, unit)
ON CONFLICT (connection_id, external_id) DO UPDATE
   SET kind = excluded.kind, started_at = excluded.started_at, ended_at = excluded.ended_at,
       value = excluded.value, unit = excluded.unit, synced_at = now()
 WHERE (s.kind, s.started_at, s.ended_at, s.value, s.unit)
       IS DISTINCT FROM (excluded.kind, excluded.started_at, excluded.ended_at, excluded.value,
                         excluded.unit)
RETURNING 1;

-- ---------------------------------------------------------------------------------------
-- game_platform_sync, game_platform_totals_sweep

-- name: gp_competitors
-- Competitors to sync: all, or coach $1's.
SELECT id, player_id, after_time_unix
  FROM competitors
 WHERE $1::uuid IS NULL OR coach_id = $1::uuid
 ORDER BY id;

-- name: gp_advance_cursor
-- Compare-and-set competitor $1's cursor from $2 to $3 (locks the row until commit).
UPDATE competitors
   SET after_time_unix = $3, last_synced_at = now()
 WHERE id = $1 AND after_time_unix = $2
RETURNING id;

-- name: gp_insert_games
-- One page of competitor $1's games; returns the ids that were new.
INSERT INTO competitor_game_stats (competitor_id, game_id, played_at, result, score, stats)
SELECT $1, t.game_id, to_timestamp(t.played_at_unix), t.result, t.score, t.stats
  FROM unnest($2::text[], $3::bigint[], $4::text[], $5::float8[], $6::jsonb[])
       AS t(game_id, played_at_unix, result, score, stats)
ON CONFLICT (competitor_id, game_id) DO NOTHING
RETURNING game_id;

-- name: gp_flag_activity
UPDATE competitors
   SET needs_totals_refresh = true, last_activity_at = now()
 WHERE id = $1;

-- name: gp_known_games
-- Which of the game ids $2 competitor $1 already has (dry runs).
SELECT game_id FROM competitor_game_stats WHERE competitor_id = $1 AND game_id = ANY($2::text[]);

-- name: gp_flagged
-- Up to $2 competitors flagged for a totals refresh, all or coach $1's.
SELECT id, player_id, last_activity_at
  FROM competitors
 WHERE needs_totals_refresh AND ($1::uuid IS NULL OR coach_id = $1::uuid)
 ORDER BY id
 LIMIT $2;

-- name: gp_flagged_among
-- Up to $3 of competitors $1 still flagged for a totals refresh (all, or coach $2's).
SELECT id, player_id, last_activity_at
  FROM competitors
 WHERE id = ANY($1::bigint[]) AND needs_totals_refresh
   AND ($2::uuid IS NULL OR coach_id = $2::uuid)
 ORDER BY id
 LIMIT $3;

-- name: gp_coaches
-- Every coach with competitors (game_platform_sync_by_coach: one sync each).
SELECT DISTINCT coach_id FROM competitors WHERE coach_id IS NOT NULL ORDER BY coach_id;

-- name: gp_store_totals
-- Store competitor $1's fresh totals. The flag is cleared only if no new activity arrived
-- since it was read ($7 = last_activity_at then): a sync running meanwhile keeps it set.
UPDATE competitors
   SET total_games = $2, total_wins = $3, total_losses = $4, total_draws = $5, rating = $6,
       totals_refreshed_at = now(),
       needs_totals_refresh = last_activity_at IS DISTINCT FROM $7::timestamptz
 WHERE id = $1
RETURNING needs_totals_refresh;

-- ---------------------------------------------------------------------------------------
-- process_orders

-- name: next_pending_order
-- The oldest pending order no other worker holds; locked until this transaction ends.
SELECT o.{queue.id} AS id, o.{queue.user_id} AS user_id, o.{queue.ticker} AS ticker,
       o.{queue.order_type} AS order_type, o.{queue.amount_usdp} AS amount_usdp
  FROM {queue} o
 WHERE o.{queue.status} = 'pending'
 ORDER BY o.{queue.date}, o.{queue.id}
 LIMIT 1
   FOR UPDATE SKIP LOCKED;

-- name: lock_trader
-- One user's orders apply one at a time across workers (a buy locks wallet then holding,
-- a sell holding then wallet: without this they could deadlock).
SELECT pg_advisory_xact_lock(hashtextextended('process_orders:' || $1::uuid::text, 0));

-- name: quote_order
-- Ticker $1's current price and the quantity $2 USDP buys at it (12 decimals, rounded down).
-- No row: unknown ticker; a null price: the ticker has no price yet.
SELECT current_price AS price,
       trunc($2::numeric / current_price, 12) AS quantity
  FROM tickers
 WHERE symbol = $1;

-- name: debit_wallet
UPDATE wallets
   SET balance_usdp = balance_usdp - $2, updated_at = now()
 WHERE user_id = $1 AND balance_usdp >= $2
RETURNING balance_usdp;

-- name: credit_wallet
INSERT INTO wallets AS w (user_id, balance_usdp) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE
   SET balance_usdp = w.balance_usdp + excluded.balance_usdp, updated_at = now();

-- name: debit_holding
UPDATE holdings
   SET quantity = quantity - $3, updated_at = now()
 WHERE user_id = $1 AND ticker = $2 AND quantity >= $3
RETURNING quantity;

-- name: credit_holding
INSERT INTO holdings AS h (user_id, ticker, quantity) VALUES ($1, $2, $3)
ON CONFLICT (user_id, ticker) DO UPDATE
   SET quantity = h.quantity + excluded.quantity, updated_at = now();

-- name: complete_order
UPDATE {queue}
   SET {queue.status} = 'completed', {queue.executed_price} = $2,
       {queue.executed_quantity} = $3, {queue.failure_reason} = NULL,
       {queue.processed_at} = now()
 WHERE {queue.id} = $1 AND {queue.status} = 'pending';

-- name: fail_order
UPDATE {queue}
   SET {queue.status} = 'failed', {queue.failure_reason} = $2, {queue.processed_at} = now()
 WHERE {queue.id} = $1 AND {queue.status} = 'pending';

-- ---------------------------------------------------------------------------------------
-- snapshot_prices

-- name: snapshot_prices
-- Hourly (UTC) OHLC per ticker for ticks in [$1, $2) into price_history; writes only
-- buckets that are new or changed. Returns (buckets seen, buckets written).
WITH agg AS (
  SELECT t.ticker,
         date_trunc('hour', t.recorded_at, 'UTC') AS bucket_start,
         (array_agg(t.price ORDER BY t.recorded_at, t.id))[1] AS open,
         max(t.price) AS high,
         min(t.price) AS low,
         (array_agg(t.price ORDER BY t.recorded_at DESC, t.id DESC))[1] AS close,
         count(*)::int AS samples
    FROM price_ticks t
   WHERE t.recorded_at >= $1 AND t.recorded_at < $2
   GROUP BY 1, 2
), written AS (
  INSERT INTO price_history AS h (ticker, bucket_start, open, high, low, close, samples)
  SELECT ticker, bucket_start, open, high, low, close, samples FROM agg
  ON CONFLICT (ticker, bucket_start) DO UPDATE
     SET open = excluded.open, high = excluded.high, low = excluded.low,
         close = excluded.close, samples = excluded.samples, recorded_at = now()
   WHERE (h.open, h.high, h.low, h.close, h.samples)
         IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close,
                           excluded.samples)
  RETURNING 1
)
SELECT (SELECT count(*) FROM agg) AS buckets, (SELECT count(*) FROM written) AS written;

-- name: current_utc_hour
SELECT date_trunc('hour', now(), 'UTC');

-- ---------------------------------------------------------------------------------------
-- rollup_usage

-- name: utc_today
SELECT (now() AT TIME ZONE 'UTC')::date;

-- name: lock_usage_day
-- Rollups of one day run one at a time (each adds a difference computed from a snapshot).
SELECT pg_advisory_xact_lock(hashtextextended('rollup_usage:' || $1::date::text, 0));

-- name: rollup_usage_day
-- Day $1 (UTC), counting events of the types $2 (empty: all) and, when $3, only those with
-- characters: add to monthly_usage the difference between the day's events now and what
-- daily_usage counted last time, then make daily_usage say what was counted. Running a day
-- twice adds nothing the second time; late events are added when the day is run again.
-- Returns (users with events, events, monthly rows changed, daily rows changed).
WITH fresh AS (
  SELECT e.{usage_events.user_id} AS user_id, count(*)::bigint AS event_count,
         coalesce(sum(e.{usage_events.characters_processed}), 0)::bigint AS characters
    FROM {usage_events} e
   WHERE e.{usage_events.timestamp} >= ($1::date)::timestamp AT TIME ZONE 'UTC'
     AND e.{usage_events.timestamp} < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
     AND (cardinality($2::text[]) = 0 OR e.{usage_events.event_type} = ANY ($2::text[]))
     AND (NOT $3::boolean OR e.{usage_events.characters_processed} > 0)
   GROUP BY 1
), counted AS (
  SELECT d.user_id, d.event_count, d.characters_processed AS characters
    FROM daily_usage d
   WHERE d.day = $1::date
), delta AS (
  SELECT coalesce(f.user_id, c.user_id) AS user_id,
         coalesce(f.characters, 0) - coalesce(c.characters, 0) AS characters
    FROM fresh f FULL JOIN counted c ON c.user_id = f.user_id
), monthly AS (
  INSERT INTO {monthly_usage} AS m
         ({monthly_usage.user_id}, {monthly_usage.month_start_date},
          {monthly_usage.total_characters_processed}, {monthly_usage.last_updated})
  SELECT user_id, date_trunc('month', $1::date)::date, characters, now()
    FROM delta
   WHERE characters <> 0
  ON CONFLICT ({monthly_usage.user_id}, {monthly_usage.month_start_date}) DO UPDATE
     SET {monthly_usage.total_characters_processed} =
           m.{monthly_usage.total_characters_processed}
           + excluded.{monthly_usage.total_characters_processed},
         {monthly_usage.last_updated} = now()
  RETURNING 1
), gone AS (
  DELETE FROM daily_usage d
   WHERE d.day = $1::date AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.user_id = d.user_id)
  RETURNING 1
), daily AS (
  INSERT INTO daily_usage AS d (day, user_id, event_count, characters_processed)
  SELECT $1::date, user_id, event_count, characters FROM fresh
  ON CONFLICT (day, user_id) DO UPDATE
     SET event_count = excluded.event_count,
         characters_processed = excluded.characters_processed, rolled_up_at = now()
   WHERE (d.event_count, d.characters_processed)
         IS DISTINCT FROM (excluded.event_count, excluded.characters_processed)
  RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS users,
       (SELECT coalesce(sum(event_count), 0) FROM fresh)::bigint AS events,
       (SELECT coalesce(sum(characters), 0) FROM fresh)::bigint AS characters,
       (SELECT count(*) FROM monthly) AS monthly_changed,
       (SELECT count(*) FROM gone) + (SELECT count(*) FROM daily) AS daily_changed;

-- ---------------------------------------------------------------------------------------
-- auto_complete_challenges

-- name: close_expired_challenges
-- Close up to $1 active challenges whose last day is before today (UTC): `completed` when
-- the average completion_rate of their challenge_member_stats reaches $2 percent,
-- otherwise (or with no stats) `failed`, as the app's auto_complete_challenges() decides;
-- notify every member once, with the app's notification (the dedupe key makes a re-run
-- insert nothing). Skips challenges another worker is closing. Returns one row per
-- challenge closed.
WITH due AS (
  SELECT c.{challenges.id} AS id
    FROM {challenges} c
   WHERE c.{challenges.status} = 'active'
     AND c.{challenges.end_date} < (now() AT TIME ZONE 'UTC')::date
   ORDER BY c.{challenges.end_date}, c.{challenges.id}
   LIMIT $1
     FOR UPDATE SKIP LOCKED
), scored AS (
  SELECT d.id,
         (SELECT avg(s.{challenge_member_stats.completion_rate})
            FROM {challenge_member_stats} s
           WHERE s.{challenge_member_stats.challenge_id} = d.id) AS average
    FROM due d
), closed AS (
  UPDATE {challenges} c
     SET {challenges.status} =
           CASE WHEN s.average >= $2::numeric THEN 'completed' ELSE 'failed' END,
         {challenges.average_completion_pct} = round(s.average, 2),
         {challenges.closed_at} = now()
    FROM scored s
   WHERE c.{challenges.id} = s.id
  RETURNING c.{challenges.id} AS id, c.{challenges.name} AS name,
            c.{challenges.status} AS status,
            c.{challenges.average_completion_pct} AS average_completion_pct
), notified AS (
  INSERT INTO {notifications}
         ({notifications.user_id}, {notifications.type}, {notifications.title},
          {notifications.body}, {notifications.data}, {notifications.dedupe_key})
  SELECT m.{challenge_members.user_id}, 'challenge_completed', 'Challenge Completed!',
         format('Your challenge "%s" has ended', cl.name),
         jsonb_build_object('challenge_id', cl.id, 'status', cl.status),
         'challenge_closed:' || cl.id
    FROM closed cl
    JOIN {challenge_members} m ON m.{challenge_members.challenge_id} = cl.id
  ON CONFLICT ({notifications.user_id}, {notifications.dedupe_key}) DO NOTHING
  RETURNING {notifications.dedupe_key} AS dedupe_key
)
SELECT cl.id, cl.status, cl.average_completion_pct,
       (SELECT count(*) FROM notified n WHERE n.dedupe_key = 'challenge_closed:' || cl.id)
         AS notified
  FROM closed cl
 ORDER BY cl.id;

-- ---------------------------------------------------------------------------------------
-- send_streak_reminders

-- name: profile_timezones
SELECT DISTINCT timezone FROM profiles;

-- name: send_streak_reminders
-- For each time zone $1 whose local hour is the reminder hour, with its local day $2
-- spanning [$3, $4): remind every user there who has logged nothing in that local day,
-- once per local day (the dedupe key). Returns (users due, reminders sent now).
WITH zone AS (
  SELECT *
    FROM unnest($1::text[], $2::date[], $3::timestamptz[], $4::timestamptz[])
      AS z(timezone, local_day, day_start, day_end)
), due AS (
  SELECT p.id AS user_id, z.local_day
    FROM zone z
    JOIN profiles p ON p.timezone = z.timezone
   WHERE NOT EXISTS (SELECT 1
                       FROM activity_logs a
                      WHERE a.user_id = p.id
                        AND a.logged_at >= z.day_start AND a.logged_at < z.day_end)
), sent AS (
  INSERT INTO {notifications}
         ({notifications.user_id}, {notifications.type}, {notifications.title},
          {notifications.body}, {notifications.data}, {notifications.dedupe_key})
  SELECT user_id, 'streak_reminder', 'Keep your streak going',
         'You have not logged anything today yet.',
         jsonb_build_object('local_day', local_day),
         'streak_reminder:' || local_day
    FROM due
  ON CONFLICT ({notifications.user_id}, {notifications.dedupe_key}) DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM due) AS due, (SELECT count(*) FROM sent) AS sent;

-- ---------------------------------------------------------------------------------------
-- cleanup

-- name: delete_old_notifications
-- One batch: up to $2 notifications older than $1 days.
WITH doomed AS (
  SELECT n.{notifications.id} AS id
    FROM {notifications} n
   WHERE n.{notifications.created_at} < now() - make_interval(days => $1)
   ORDER BY n.{notifications.created_at}
   LIMIT $2
     FOR UPDATE SKIP LOCKED
)
DELETE FROM {notifications} n USING doomed d WHERE n.{notifications.id} = d.id;

-- name: delete_old_orders
-- One batch: up to $2 completed or failed orders processed more than $1 days ago.
WITH doomed AS (
  SELECT o.{queue.id} AS id
    FROM {queue} o
   WHERE o.{queue.status} <> 'pending'
     AND o.{queue.processed_at} < now() - make_interval(days => $1)
   ORDER BY o.{queue.processed_at}
   LIMIT $2
     FOR UPDATE SKIP LOCKED
)
DELETE FROM {queue} o USING doomed d WHERE o.{queue.id} = d.id;

-- name: delete_old_jobs
-- One batch: up to $2 succeeded job_queue rows finished more than $1 days ago (the
-- game-platform app's own job-queue cleanup; the worker's pruner does the same under
-- WORKER_RETAIN_SUCCEEDED_DAYS).
-- created_at < cutoff (implied: a job is created before it finishes) lets the BRIN index
-- on created_at skip recent pages, as in the pruner's statement.
WITH doomed AS (
  SELECT id
    FROM job_queue
   WHERE created_at < now() - make_interval(days => $1)
     AND status = 'succeeded' AND finished_at < now() - make_interval(days => $1)
   LIMIT $2
     FOR UPDATE SKIP LOCKED
)
DELETE FROM job_queue j USING doomed d WHERE j.id = d.id;
