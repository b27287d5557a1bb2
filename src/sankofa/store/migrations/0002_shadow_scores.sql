-- Champion and challenger: what a shadow model would have decided.
--
-- When SANKOFA_SHADOW_MODEL_PATH names a second model, the engine scores it
-- on the same feature matrix in the same batch and stores its score, its
-- decision (by its own thresholds) and its version in the same row, written
-- by the same COPY. The answer is always the champion's; these columns only
-- feed `sankofa shadow report`. NULL where no shadow model was configured.
-- Adding nullable columns without a default rewrites nothing.

ALTER TABLE transactions
    ADD COLUMN shadow_risk_score double precision
        CHECK (shadow_risk_score >= 0 AND shadow_risk_score <= 1),
    ADD COLUMN shadow_decision text
        CHECK (shadow_decision IN ('approve', 'review', 'decline')),
    ADD COLUMN shadow_model_version text;
