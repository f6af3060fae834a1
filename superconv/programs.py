"""The programs superconv runs, and how a config file reaches one.

One table (`PROGRAMS`: `config.mode` -> program), one config loader and override parser
(`load_config`: ml_collections' config_flags, exactly as `--config=FILE:ARG --config.a.b=V` on
the command line), and one way to run: `run(config, workdir)` resolves the config once
(`configure.resolve`) and calls the program. `superconv.main` and `experiments.run` both use it.

Nothing here imports JAX at module level: a mistyped flag is reported before JAX starts.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

# mode -> (module, function): each program is `fn(config, workdir)` on a resolved config.
PROGRAMS = {
    'train': ('superconv.train', 'train_and_evaluate'),
    'lr_range': ('superconv.lr_range', 'run'),
    'eval': ('superconv.evaluate', 'evaluate'),
}


def program(mode: str):
  """The function that runs `mode` (imported on first use: the programs import JAX)."""
  module, name = PROGRAMS[mode]
  return getattr(importlib.import_module(module), name)


def run(config: ml_collections.ConfigDict, workdir: str, **kwargs) -> Any:
  """Resolves `config` (`configure.resolve`) and runs its program in `workdir`."""
  from superconv import configure  # pylint: disable=g-import-not-at-top
  config = configure.resolve(config)
  use_compilation_cache(config.compilation_cache_dir)
  if config.mode != 'lr_range':  # training and evaluation claim their workdir themselves
    return program(config.mode)(config, workdir, **kwargs)
  from superconv import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  with workdir_lib.claim(config, workdir) as claimed:  # one writer; config.json is the sweep's
    claimed.record_config()
    return program(config.mode)(config, workdir, **kwargs)


def use_compilation_cache(path: str) -> str:
  """Turns on JAX's persistent compilation cache in `path` ('' : off); returns the folder used.

  A second run of the same program (another seed, a resumed run, the eval step of a finished
  one) then loads its compiled steps instead of compiling them again. JAX's own
  `JAX_COMPILATION_CACHE_DIR`, when set, wins. Only compilations of 1 s or more are stored
  (JAX's default), so the folder holds the train and eval steps, not every small kernel.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  if not path:
    return ''
  path = os.path.expanduser(path)
  jax.config.update('jax_compilation_cache_dir', path)
  return path


def user_errors() -> tuple[type[BaseException], ...]:
  """The errors that are the user's to fix: reported in one line, never as a traceback."""
  # pylint: disable=g-import-not-at-top
  from superconv import checkpoint
  from superconv import configure
  from superconv import step
  from superconv import workdir
  from superconv.data import sources
  # pylint: enable=g-import-not-at-top
  return (configure.ConfigError, sources.DataError, checkpoint.CheckpointError,
          workdir.WorkdirError, step.TrainingDiverged)


def exit_code(error: BaseException) -> int:
  """3 for a diverged run (a result, e.g. of a too large LR), 2 for every other user error."""
  from superconv import step  # pylint: disable=g-import-not-at-top
  return 3 if isinstance(error, step.TrainingDiverged) else 2


def define_config_flag(flag_values=flags.FLAGS, sys_argv: Sequence[str] | None = None) -> None:
  """`--config=FILE[:ARG]`; its `--config.a.b=V` overrides are read from `sys_argv` (default:
  sys.argv, as config_flags does)."""
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file, optionally :ARG.',
                                  lock_config=True, flag_values=flag_values,
                                  sys_argv=None if sys_argv is None else list(sys_argv))


def add_config_root(path: str) -> None:
  """Lets a config file in a package folder import its siblings, from any working directory.

  `configs/resnet56.py` imports `configs.common`; `configs/` is a folder of the repository, not
  an installed package, so its parent goes on `sys.path` (the file's own folder is what
  `--config` names; nothing is added for a file outside a package).
  """
  folder = os.path.dirname(os.path.abspath(path.split(':', 1)[0]))
  root = os.path.dirname(folder)
  if os.path.exists(os.path.join(folder, '__init__.py')) and root not in sys.path:
    sys.path.insert(0, root)


def load_config(path: str, arg: str = '', overrides: Sequence[str] = ()
                ) -> ml_collections.ConfigDict:
  """`path`'s `get_config(arg)` with `overrides` ('a.b=value', as `--config.a.b=value`).

  Parsed by ml_collections' own flag machinery, the same as the command line: values are
  typed by the field they replace, and an unknown field is an error.
  """
  spec = f'{path}:{arg}' if arg else path
  argv = ['superconv', f'--config={spec}', *(f'--config.{o}' for o in overrides)]
  add_config_root(path)
  fv = flags.FlagValues()
  define_config_flag(fv, sys_argv=argv)
  fv(argv)
  return fv.config


def _condense(message: str) -> str:
  """A flag error in one or two lines: config_flags embeds a whole traceback in its message."""
  lines = [l.strip() for l in message.splitlines() if l.strip()]
  if any(l.startswith('Traceback') for l in lines):
    lines = [lines[0], lines[-1]]  # 'flag --config=...: Error whilst parsing' and the exception
  return ' '.join(lines)


def flag_error_message(argv: Sequence[str], error: Exception) -> str:
  """One line for a bad flag or a mistyped config field.

  A mistyped field (`--config.schedule.max_lrr=2`) reaches us as ml_collections' KeyError
  (wrapped in an AttributeError), not as a flags.Error, and would otherwise end in a traceback.
  """
  if isinstance(error, flags.Error):
    return _condense(str(error))
  e = error
  while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError(..))
    e = e.args[0]
  text = str(e.args[0] if e.args else e)
  key = text.split("'")[1] if text.count("'") >= 2 else ''
  bad = [a.split('=', 1)[0] for a in argv[1:]
         if a.startswith('--config.') and key and key in a.split('=', 1)[0].split('.')]
  return (f'{", ".join(bad) or "a --config override"}: no such config field '
          f'({" ".join(text.split())}).')


def missing_config_message(spec: str) -> str:
  """One line for a --config file that is not there, wherever the command was run from."""
  path = spec.split(':', 1)[0]
  hint = ''
  if not os.path.isabs(path):
    # superconv's own configs, wherever it is installed: `configs` is a package beside it.
    import importlib.util  # pylint: disable=g-import-not-at-top
    found = importlib.util.find_spec('configs')
    here = os.path.dirname(found.origin) if found and found.origin else ''
    name = os.path.join(here, os.path.basename(path)) if here else ''
    if name and os.path.exists(name):
      hint = f'; superconv\'s own {os.path.basename(path)} is {name}'
    elif here:
      hint = f'; superconv\'s own configs are in {here}'
  return (f'--config={spec}: no such config file ({os.path.abspath(path)} does not exist; '
          f'a relative path is read from the working directory {os.getcwd()}){hint}.')


def parse_flags(argv: list[str], flag_values=flags.FLAGS) -> list[str]:
  """absl's flag parsing, with every config mistake reported like a ConfigError: one line, exit 2."""
  specs = [a.split('=', 1)[1] if '=' in a else b for a, b in zip(argv[1:], [*argv[2:], ''])
           if a.startswith('--config=') or a == '--config']
  if specs:
    add_config_root(specs[-1])

  def missing_file():
    # config_flags reports a missing file late (when the config is first read, or wrapped in
    # a parse error of an override) and as a traceback: checked here from the argument.
    if specs and not os.path.exists(specs[-1].split(':', 1)[0]):
      return missing_config_message(specs[-1])
    flag = flag_values['config'] if 'config' in flag_values else None  # `--config FILE`
    if flag is not None and flag.present and not isinstance(flag.value, ml_collections.ConfigDict):
      return missing_config_message(flag.config_filename)
    return ''

  try:
    rest = flag_values(argv)
    message = missing_file()
    if not message:
      return rest
  except (flags.Error, AttributeError, KeyError, OSError) as e:
    message = missing_file() or (
        f'{flag_error_message(argv, e).rstrip(".")}. (--helpshort lists the flags; '
        'configs/default.py every config field.)')
  print(f'superconv: {message}', file=sys.stderr)
  sys.exit(2)
