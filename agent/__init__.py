"""The scheduled agent: jobs from a TOML file run at their times, with promotion, RPO alerts and drills.

``spec/agent.md`` is the contract.  The package uses the public library (``dtstore``,
``dtstore.connectors``) and is used only by the CLI.
"""
