"""Configuration: how a setting is declared once (its default and one-line help, in a dataclass
field) so that commands, config files and run_config.json all derive from it."""
