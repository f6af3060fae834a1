"""Every command in docs/*.md and README.md parses: no flag, config argument or field that does
not exist.

Commands are found in fenced code blocks, also inside `--command="..."` of gcloud and after
`&&`. `python -m superconv.main` goes through the CLI's own flag machinery (ml_collections
`DEFINE_config_file` with a locked config, as superconv/main.py), so a mistyped field fails as it
would for a user; `python -m experiments.run` builds its config with the runner's own function
(`--set` fields must exist); `python -m benchmarks.throughput` and `benchmarks.input_pipeline`
are parsed by their argparse parsers. A command the extractor misses is an error, not a skip.
Every `bash` block must pass `bash -n`, and every `gcloud` command may use only the subcommands
and flags listed in GCLOUD (from the gcloud reference pages), so a mistyped flag in the TPU
guide fails here. Nothing is run. ~2 s.
"""

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

# The research studies' commands (research/*/README.md) parse through their own parsers too.
RESEARCH = ('research.range_trust.report', 'research.superconvergence_cpu.report',
            'research.cpu_perf.convs', 'research.cpu_perf.cpu_unroll', 'research.cpu_perf.tables')
MODULES = ('superconv.main', 'experiments.run', 'benchmarks.throughput',
           'benchmarks.input_pipeline', 'experiments.make_tables', 'benchmarks.tables') + RESEARCH
SEPARATORS = {'&&', '||', ';', '|', '&'}
DOCS = (sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md'))) + [os.path.join(ROOT, 'README.md')]
        + sorted(glob.glob(os.path.join(ROOT, 'research', '**', 'README.md'), recursive=True)))


def fenced_blocks(text: str) -> list[str]:
  return re.findall(r'^ *```[^\n]*\n(.*?)^ *```', text, flags=re.S | re.M)


def commands_in(shell: str) -> list[tuple[str, list[str]]]:
  """(module, argv) of every `python -m MODULE ...` in a shell snippet, nested strings too."""
  found = []
  # Backslash-newline continues a line, inside quotes too.
  for line in re.sub(r'\\\n', ' ', shell).splitlines():
    line = line.strip()
    if 'python -m' not in line or line.startswith('#'):
      continue
    tokens = shlex.split(line, comments=True)
    i = 0
    while i < len(tokens):
      tok = tokens[i]
      # `python`, or a virtual environment's, e.g. `~/venv/bin/python`.
      if (os.path.basename(tok) in ('python', 'python3') and i + 2 < len(tokens) + 1
          and tokens[i + 1:i + 2] == ['-m']):
        module, j = tokens[i + 2], i + 3
        while j < len(tokens) and tokens[j] not in SEPARATORS:
          j += 1
        if module in MODULES:
          found.append((module, tokens[i + 3:j]))
        i = j
      elif 'python -m' in tok:  # a command inside an argument, e.g. --command="cd x && python ..."
        found += commands_in(tok.split('=', 1)[1] if tok.startswith('-') else tok)
        i += 1
      else:
        i += 1
  return found


def shell_lines(shell: str) -> list[str]:
  """The non-comment lines of a shell snippet, backslash-newline continuations joined."""
  lines = [line.strip() for line in re.sub(r'\\\n', ' ', shell).splitlines()]
  return [line for line in lines if line and not line.startswith('#')]


def all_commands() -> list[tuple[str, str, list[str]]]:
  out = []
  for path in DOCS:
    with open(path) as f:
      text = f.read()
    for block in fenced_blocks(text):
      for module, argv in commands_in(block):
        out.append((os.path.relpath(path, ROOT), module, argv))
  return out


COMMANDS = all_commands()


def test_commands_were_found():
  files = {f for f, _, _ in COMMANDS}
  assert {'README.md', 'docs/tpu.md', 'docs/gpu.md'} <= files
  assert {m for _, m, _ in COMMANDS} == set(MODULES)


def test_extraction():
  snippet = ('gcloud x --worker=all --command="cd ~/s && \\\n  python -m superconv.main '
             '--config=c.py:a=1 \\\n  --workdir=\\$HOME/w --config.seed=2"\n'
             'FOO=1 python -m benchmarks.throughput --steps 3 > out.txt && echo\n'
             '# python -m superconv.main --config=ignored.py\n')
  assert commands_in(snippet) == [
      ('superconv.main', ['--config=c.py:a=1', '--workdir=$HOME/w', '--config.seed=2']),
      ('benchmarks.throughput', ['--steps', '3', '>', 'out.txt'])]


def test_extraction_of_a_venv_python_inside_a_shell_variable():
  snippet = ('RUN="cd ~/s && ~/venv/bin/python -m superconv.main --config=c.py \\\n'
             '  --workdir=$WORKDIR"\ngcloud x --command="$RUN"\n')
  assert commands_in(snippet) == [('superconv.main', ['--config=c.py', '--workdir=$WORKDIR'])]


def test_no_documented_command_is_missed_by_the_extractor():
  """Each `python -m MODULE` written in a block is one extracted command: none goes unparsed."""
  for path in DOCS:
    with open(path) as f:
      blocks = fenced_blocks(f.read())
    for block in blocks:
      for module in MODULES:
        written = sum(len(re.findall(r'python3? -m ' + re.escape(module) + r'\b', line))
                      for line in shell_lines(block))
        found = sum(m == module for m, _ in commands_in(block))
        assert written == found, (os.path.relpath(path, ROOT), module, block)


def parse_main(argv: list[str]):
  """The config `python -m superconv.main argv` would train, through the CLI's flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, '', flag_values=fv)
  argv = ['superconv.main', *argv]
  # Override flags (--config.a.b=v) are defined from the argv the flag is told about.
  config_flags.DEFINE_config_file('config', None, '', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  assert fv['workdir'].value, 'superconv.main needs --workdir'
  return fv.config


class _Parsed(Exception):

  def __init__(self, ns):
    super().__init__()
    self.ns = ns


def parse_argparse(main, argv: list[str], monkeypatch) -> argparse.Namespace:
  """Runs `main(argv)` only as far as its argparse parser: the namespace, or SystemExit."""
  original = argparse.ArgumentParser.parse_args

  def parse_then_stop(self, args=None, namespace=None):
    raise _Parsed(original(self, args, namespace))
  monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', parse_then_stop)
  with pytest.raises(_Parsed) as info:
    main(argv)
  return info.value.ns


def test_parse_main_rejects_unknown_fields(monkeypatch):
  monkeypatch.chdir(ROOT)
  config = parse_main(['--config=configs/resnet56.py:tiny', '--workdir=/tmp/x',
                       '--config.schedule.max_lr=0.5', '--config.data.mirror=False'])
  assert (config.schedule.max_lr, config.data.mirror, config.model.name) == (0.5, False, 'resnet8')
  with pytest.raises(Exception, match='max_lrr'):
    parse_main(['--config=configs/resnet56.py', '--workdir=/tmp/x', '--config.schedule.max_lrr=1'])
  with pytest.raises(Exception, match='unknown config argument'):
    parse_main(['--config=configs/resnet56.py:bn_group=8', '--workdir=/tmp/x'])


@pytest.mark.parametrize('where,module,argv', COMMANDS,
                         ids=[f'{f}:{m}:{i}' for i, (f, m, _) in enumerate(COMMANDS)])
def test_command_parses(where, module, argv, monkeypatch):
  del where
  monkeypatch.chdir(ROOT)
  # Shell redirections are not arguments.
  argv = argv[:next((i for i, a in enumerate(argv) if a in ('>', '>>', '2>', '2>&1')), len(argv))]
  if module == 'superconv.main':
    config = parse_main(argv)
    assert config.mode in ('train', 'lr_range', 'eval')
  elif module == 'experiments.run':
    from experiments import run  # pylint: disable=g-import-not-at-top
    ns = parse_argparse(run.main, argv, monkeypatch)
    run.build_config(ns.config, ns.args, ns.seeds[0], ns.sets, ns.data)  # fields must exist
  elif module in RESEARCH:
    import importlib  # pylint: disable=g-import-not-at-top
    ns = parse_argparse(importlib.import_module(module).main, argv, monkeypatch)
    assert isinstance(ns, argparse.Namespace)
  elif module in ('experiments.make_tables', 'benchmarks.tables'):
    from benchmarks import tables  # pylint: disable=g-import-not-at-top
    from experiments import make_tables  # pylint: disable=g-import-not-at-top
    main = make_tables.main if module == 'experiments.make_tables' else tables.main
    ns = parse_argparse(main, argv, monkeypatch)
    assert ns.write.endswith('.md') and os.path.exists(ns.write)  # a docs page, never README
    assert os.path.basename(ns.write) != 'README.md'
  elif module == 'benchmarks.input_pipeline':
    from benchmarks import input_pipeline  # pylint: disable=g-import-not-at-top
    ns = parse_argparse(input_pipeline.main, argv, monkeypatch)
    assert ns.batches > 0
  else:
    from benchmarks import throughput  # pylint: disable=g-import-not-at-top
    ns = parse_argparse(throughput.main, argv, monkeypatch)
    assert ns.steps > 0


def bash_blocks() -> list[tuple[str, str]]:
  """(file, code) of every fenced block marked bash or sh."""
  out = []
  for path in DOCS:
    with open(path) as f:
      text = f.read()
    for lang, code in re.findall(r'^ *```(\w*)[^\n]*\n(.*?)^ *```', text, flags=re.S | re.M):
      if lang in ('bash', 'sh', 'shell'):
        out.append((os.path.relpath(path, ROOT), code))
  return out


@pytest.mark.skipif(shutil.which('bash') is None, reason='no bash')
@pytest.mark.parametrize('where,code', bash_blocks(),
                         ids=[f'{f}:{i}' for i, (f, _) in enumerate(bash_blocks())])
def test_bash_block_parses(where, code):
  """`bash -n`: quoting, loops, case arms and here-strings are well formed (nothing runs)."""
  done = subprocess.run(['bash', '-n'], input=code, capture_output=True, text=True, check=False)
  assert done.returncode == 0, f'{where}: {done.stderr}\n{code}'


# The gcloud commands the docs may use, with their flags (gcloud reference pages for each:
# `gcloud compute tpus queued-resources create` etc.), plus gcloud-wide flags.
GCLOUD_WIDE = {'--project', '--quiet', '--format', '--verbosity'}
GCLOUD = {
    ('compute', 'tpus', 'queued-resources', 'create'): {
        '--zone', '--node-id', '--node-count', '--node-prefix', '--accelerator-type',
        '--runtime-version', '--spot', '--guaranteed', '--reserved', '--async',
        '--valid-until-duration', '--valid-after-duration', '--metadata', '--labels',
        '--network', '--subnetwork', '--service-account', '--scopes', '--internal-ips'},
    ('compute', 'tpus', 'queued-resources', 'describe'): {'--zone'},
    ('compute', 'tpus', 'queued-resources', 'list'): {'--zone', '--filter'},
    ('compute', 'tpus', 'queued-resources', 'delete'): {'--zone', '--force', '--async'},
    ('compute', 'tpus', 'tpu-vm', 'create'): {
        '--zone', '--accelerator-type', '--version', '--spot', '--preemptible'},
    ('compute', 'tpus', 'tpu-vm', 'delete'): {'--zone', '--async'},
    ('compute', 'tpus', 'tpu-vm', 'ssh'): {'--zone', '--worker', '--command'},
    ('compute', 'tpus', 'tpu-vm', 'scp'): {'--zone', '--worker', '--recurse'},
    ('storage', 'ls'): set(),
    ('storage', 'cp'): {'--recursive'},
}


def gcloud_commands(shell: str) -> list[tuple[tuple[str, ...], list[str]]]:
  """(command path, flags) of every `gcloud ...` in a shell snippet (not inside strings)."""
  found = []
  for line in shell_lines(shell):
    tokens = shlex.split(line, comments=True)
    for i, tok in enumerate(tokens):
      if tok != 'gcloud':
        continue
      words, flags = [], []
      for t in tokens[i + 1:]:
        if t in SEPARATORS or re.match(r'^\d*[<>]', t) or t.endswith(';'):
          break
        (flags if t.startswith('-') else words).append(t)
      path = max((p for p in GCLOUD if tuple(words[:len(p)]) == p), key=len, default=None)
      found.append((path or tuple(words), flags))
  return found


def test_gcloud_extraction():
  snippet = ('until gcloud storage ls $W/summary.json >/dev/null 2>&1; do\n'
             '  gcloud compute tpus queued-resources create $QR --zone=$Z \\\n'
             '      --spot || sleep 60\n')
  assert gcloud_commands(snippet) == [
      (('storage', 'ls'), []),
      (('compute', 'tpus', 'queued-resources', 'create'), ['--zone=$Z', '--spot'])]


GCLOUD_USES = [(where, path, flags) for where, code in bash_blocks()
               for path, flags in gcloud_commands(code)]


def test_the_tpu_guide_uses_queued_resources_and_spot():
  paths = {p for w, p, _ in GCLOUD_USES if w == 'docs/tpu.md'}
  assert ('compute', 'tpus', 'queued-resources', 'create') in paths
  assert any('--spot' in f for w, _, f in GCLOUD_USES if w == 'docs/tpu.md')


@pytest.mark.parametrize('where,path,flags', GCLOUD_USES,
                         ids=[f'{w}:{" ".join(p[2:] or p)}:{i}'
                              for i, (w, p, _) in enumerate(GCLOUD_USES)])
def test_gcloud_command_is_known(where, path, flags):
  assert path in GCLOUD, f'{where}: gcloud {" ".join(path)} is not a command this test knows'
  unknown = {f.split('=', 1)[0] for f in flags} - GCLOUD[path] - GCLOUD_WIDE
  assert not unknown, f'{where}: gcloud {" ".join(path)} has no flag {sorted(unknown)}'
