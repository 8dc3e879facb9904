"""A little demo data for `python -m worker demo` on the embedded database.

`prepare()` seeds the reference tables and returns the business jobs the demo enqueues.
Reference rows (users, tickers, wallets, a finished challenge, yesterday's usage, the
previous hour's price ticks) are inserted once; every run adds a few new trade orders, whose
insert trigger enqueues `process_orders`. A second run shows the other handlers finding
nothing new to do: they are idempotent.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from handlers import settings as handler_settings

DEMO_VIEW = "challenge_stats"

JOBS: list[tuple[str, dict[str, Any]]] = [
    ("rollup_usage", {}),
    ("snapshot_prices", {}),
    ("auto_complete_challenges", {}),
    ("send_streak_reminders", {}),
    ("sync_wearables", {}),
    ("refresh_metrics", {"views": [DEMO_VIEW]}),
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

-- Yesterday's (UTC) usage, once per day.
INSERT INTO usage_events (user_id, event_type, quantity, occurred_at)
SELECT u.id, 'synthesis', e.chars, date_trunc('day', now(), 'UTC') - interval '1 day' + e.at
  FROM (VALUES ('Alice', 1200, interval '9 hours'), ('Alice', 800, interval '13 hours'),
               ('Bob', 450, interval '20 hours')) AS e(name, chars, at)
  JOIN demo_user u USING (name)
 WHERE NOT EXISTS (SELECT 1 FROM usage_events e
                    WHERE e.occurred_at >= date_trunc('day', now(), 'UTC') - interval '1 day'
                      AND e.occurred_at < date_trunc('day', now(), 'UTC'));

-- Two challenges that ended an hour ago, once.
WITH made AS (
  INSERT INTO challenges (title, starts_at, ends_at)
  SELECT v.title, now() - interval '30 days', now() - interval '1 hour'
    FROM (VALUES ('Demo: 10k steps a day'), ('Demo: no sugar week')) AS v(title)
   WHERE NOT EXISTS (SELECT 1 FROM challenges c WHERE c.title LIKE 'Demo: %')
  RETURNING id, title
)
INSERT INTO challenge_members (challenge_id, user_id, completion_pct)
SELECT made.id, u.id, CASE WHEN made.title LIKE '%steps%' THEN m.steps ELSE m.sugar END
  FROM made
 CROSS JOIN (VALUES ('Alice', 95, 40), ('Bob', 85, 70), ('Chiyo', 70, 20)) AS m(name, steps, sugar)
  JOIN demo_user u USING (name);

INSERT INTO activity_logs (user_id, kind, logged_at)
SELECT u.id, 'water', now() FROM demo_user u
 WHERE u.name = 'Alice' AND NOT EXISTS (SELECT 1 FROM activity_logs a WHERE a.user_id = u.id);

INSERT INTO wearable_connections (user_id, provider, external_user_id)
SELECT id, 'default', lower(name) FROM demo_user WHERE name = 'Alice'
ON CONFLICT (provider, external_user_id) DO NOTHING;

-- New orders on every run: their insert trigger enqueues process_orders.
INSERT INTO trade_orders (user_id, ticker, order_type, amount_usdp)
SELECT u.id, o.ticker, o.order_type, o.amount
  FROM (VALUES (1, 'Alice', 'ACME', 'buy', 100), (2, 'Bob', 'GLOBEX', 'sell', 80),
               (3, 'Chiyo', 'INITECH', 'buy', 25), (4, 'Chiyo', 'ACME', 'buy', 5000),
               (5, 'Bob', 'UNOBTAINIUM', 'buy', 10)) AS o(n, name, ticker, order_type, amount)
  JOIN demo_user u USING (name)
 ORDER BY o.n;
"""


async def prepare(pool: asyncpg.Pool) -> list[tuple[str, dict[str, Any]]]:
    """Seed the demo rows and new orders; allow the demo's materialized view in this
    process's handler settings; return the jobs to enqueue."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SEED)  # constants only: one script, no parameters
    conf = handler_settings.get()
    if DEMO_VIEW not in conf.metrics_views:
        handler_settings.use(
            conf.model_copy(update={"metrics_views": [*conf.metrics_views, DEMO_VIEW]})
        )
    return list(JOBS)
