-- Project and tenant budgets (adapters/budgets.py). `project` '' is the tenant's own
-- budget. What was spent in each period lives in `state` rows, as for key budgets.
CREATE TABLE budgets (
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    budget_usd NUMERIC(30, 10) NOT NULL,
    budget_period TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, project)
);
