"""A little demo data for `python -m worker demo` on the embedded database.

`prepare()` seeds the reference tables and returns the business jobs the demo enqueues.
Reference rows (users, tickers, wallets, two finished challenges, yesterday's usage, the
previous hour's price ticks) are inserted once; every run adds a few new trade orders to
`queue`, whose insert trigger enqueues `process_orders`. A second run shows the other
handlers finding nothing new to do: they are idempotent.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from handlers import settings as handler_settings

DEMO_VIEW = "challenge_stats"
DEMO_FUNCTION = "refresh_issuer_stats_cache"

JOBS: list[tuple[str, dict[str, Any]]] = [
    ("rollup_usage", {}),
    ("snapshot_prices", {}),
    ("auto_complete_challenges", {}),
    ("send_streak_reminders", {}),
    ("sync_wearables", {}),
    ("refresh_metrics", {"views": [DEMO_VIEW]}),
    ("call_function", {"function": DEMO_FUNCTION}),
    ("game_platform_sync", {"dryRun": True, "coachId": None}),
]
"""Enqueued by the demo after seeding (process_orders is enqueued by the orders trigger)."""

TASK_TYPES = frozenset({"process_orders", *(task_type for task_type, _ in JOBS)})
"""The handlers the demo's business part needs."""

_SEED = """
CREATE TEMP TABLE demo_user (name text PRIMARY KEY, id uuid NOT NULL, timezone text NOT NULL,
                             balance numeric NOT NULL) ON COMMIT DROP;
INSERT INTO demo_user VALUES
  ('Alice', '00000000-0000-4000-8000-00000000a11c', 'Europe/Berlin', 1000),
  ('Bob', '00000000-0000-4000-8000-000000000b0b', 'America/New_York', 500),
  ('Chiyo', '00000000-0000-4000-8000-0000000c4170', 'Asia/Tokyo', 50);

INSERT INTO profiles (id, display_name, timezone)
SELECT id, name, timezone FROM demo_user
ON CONFLICT (id) DO NOTHING;

INSERT INTO tickers (symbol, name, current_price, price_updated_at) VALUES
  ('ACME', 'Acme Corp', 12.5, now()), ('GLOBEX', 'Globex', 40, now()),
  ('INITECH', 'Initech', 3.2, now())
ON CONFLICT (symbol) DO NOTHING;

INSERT INTO wallets (user_id, balance_usdp)
SELECT id, balance FROM demo_user
ON CONFLICT (user_id) DO NOTHING;

INSERT INTO holdings (user_id, ticker, quantity)
SELECT id, 'GLOBEX', 10 FROM demo_user WHERE name = 'Bob'
ON CONFLICT (user_id, ticker) DO NOTHING;

-- The previous UTC hour's ticks, once per hour.
INSERT INTO price_ticks (ticker, price, recorded_at)
SELECT t.symbol, round(t.current_price * (1 + k.pct / 100.0), 4),
       date_trunc('hour', now(), 'UTC') - interval '1 hour' + k.minute * interval '1 minute'
  FROM tickers t
 CROSS JOIN (VALUES (5, -1.0), (20, 2.5), (35, -0.5), (50, 1.0)) AS k(minute, pct)
 WHERE t.symbol IN ('ACME', 'GLOBEX', 'INITECH')
   AND NOT EXISTS (SELECT 1 FROM price_ticks p
                    WHERE p.ticker = t.symbol
                      AND p.recorded_at >= date_trunc('hour', now(), 'UTC') - interval '1 hour'
                      AND p.recorded_at < date_trunc('hour', now(), 'UTC'));

-- Yesterday's (UTC) usage, once per day: TTS requests, and a login the rollup leaves out.
INSERT INTO usage_events (user_id, event_type, characters_processed, "timestamp")
SELECT u.id, e.event_type, e.chars, date_trunc('day', now(), 'UTC') - interval '1 day' + e.at
  FROM (VALUES ('Alice', 'TTS_REQUEST', 1200, interval '9 hours'),
               ('Alice', 'TTS_REQUEST', 800, interval '13 hours'),
               ('Bob', 'TTS_REQUEST', 450, interval '20 hours'),
               ('Bob', 'LOGIN', 1, interval '20 hours')) AS e(name, event_type, chars, at)
  JOIN demo_user u USING (name)
 WHERE NOT EXISTS (SELECT 1 FROM usage_events e
                    WHERE e."timestamp" >= date_trunc('day', now(), 'UTC') - interval '1 day'
                      AND e."timestamp" < date_trunc('day', now(), 'UTC'));

-- Two challenges whose last day was yesterday (UTC), once.
WITH made AS (
  INSERT INTO challenges (name, start_date, end_date)
  SELECT v.name, (now() AT TIME ZONE 'UTC')::date - 30, (now() AT TIME ZONE 'UTC')::date - 1
    FROM (VALUES ('Demo: 10k steps a day'), ('Demo: no sugar week')) AS v(name)
   WHERE NOT EXISTS (SELECT 1 FROM challenges c WHERE c.name LIKE 'Demo: %')
  RETURNING id, name
), joined AS (
  INSERT INTO challenge_members (challenge_id, user_id)
  SELECT made.id, u.id FROM made CROSS JOIN demo_user u
  RETURNING challenge_id, user_id
)
INSERT INTO challenge_member_stats (challenge_id, user_id, completion_rate)
SELECT j.challenge_id, j.user_id,
       CASE WHEN made.name LIKE '%steps%' THEN m.steps ELSE m.sugar END
  FROM joined j
  JOIN made ON made.id = j.challenge_id
  JOIN demo_user u ON u.id = j.user_id
  JOIN (VALUES ('Alice', 95, 40), ('Bob', 85, 70), ('Chiyo', 70, 20)) AS m(name, steps, sugar)
    ON m.name = u.name;

INSERT INTO activity_logs (user_id, kind, logged_at)
SELECT u.id, 'water', now() FROM demo_user u
 WHERE u.name = 'Alice' AND NOT EXISTS (SELECT 1 FROM activity_logs a WHERE a.user_id = u.id);

INSERT INTO wearable_connections (user_id, provider, external_user_id)
SELECT id, 'default', lower(name) FROM demo_user WHERE name = 'Alice'
ON CONFLICT (provider, external_user_id) DO NOTHING;

-- New orders on every run: their insert trigger enqueues process_orders.
INSERT INTO queue (user_id, ticker, order_type, amount_usdp)
SELECT u.id, o.ticker, o.order_type, o.amount
  FROM (VALUES (1, 'Alice', 'ACME', 'buy', 100), (2, 'Bob', 'GLOBEX', 'sell', 80),
               (3, 'Chiyo', 'INITECH', 'buy', 25), (4, 'Chiyo', 'ACME', 'buy', 5000),
               (5, 'Bob', 'UNOBTAINIUM', 'buy', 10)) AS o(n, name, ticker, order_type, amount)
  JOIN demo_user u USING (name)
 ORDER BY o.n;
"""


async def prepare(pool: asyncpg.Pool) -> list[tuple[str, dict[str, Any]]]:
    """Seed the demo rows and new orders; allow the demo's materialized view and stats
    function in this process's handler settings; return the jobs to enqueue."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SEED)  # constants only: one script, no parameters
    conf = handler_settings.get()
    update: dict[str, list[str]] = {}
    if DEMO_VIEW not in conf.metrics_views:
        update["metrics_views"] = [*conf.metrics_views, DEMO_VIEW]
    if DEMO_FUNCTION not in conf.call_functions:
        update["call_functions"] = [*conf.call_functions, DEMO_FUNCTION]
    if update:
        handler_settings.use(conf.model_copy(update=update))
    return list(JOBS)
