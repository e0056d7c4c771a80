"""The Switchboard process: config, app factory, lifecycle, auth, routes, CLI."""
