-- Project and tenant budgets (adapters/budgets.py). `project` '' is the tenant's own
-- budget; money as TEXT with 10 decimal places, like keys.budget_usd. What was spent in
-- each period lives in `state` rows, as for key budgets.
CREATE TABLE budgets (
    tenant TEXT NOT NULL,
    project TEXT NOT NULL,
    budget_usd TEXT NOT NULL,
    budget_period TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, project)
);
