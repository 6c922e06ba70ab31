"""Code shared by every component: settings, event contract, tenant registry, SQL, services."""
