-- The BACEN night-time PIX limit is a limit per night, not per transaction:
-- since January 2023 limits are kept per period (day 06:00-20:00, night
-- 20:00-06:00), and a customer may move the whole night's limit in one PIX or
-- in several. Judging a PIX needs what the customer already moved that night:
-- the sum of their PIX not declined, by event time. This partial index serves
-- that sum (sankofa.rules.night) and costs an index entry only on PIX rows that
-- were not declined, not on every write.
CREATE INDEX transactions_pix_spent ON transactions (customer_ref, event_time)
    WHERE tx_type = 'pix' AND decision <> 'decline';
