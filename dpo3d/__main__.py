"""`python -m dpo3d` (and `accelerate launch -m dpo3d`): run the `dpo3d` command.

The library never imports the command layer; the command is found through the
console-script entry point this package installs, resolved at run time.
"""

from importlib.metadata import entry_points


def main() -> None:
    (command,) = entry_points(group="console_scripts", name="dpo3d")
    command.load()()


if __name__ == "__main__":
    main()
