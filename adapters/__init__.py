"""Everything that touches the world: providers, storage, jobs, telemetry, clock."""
