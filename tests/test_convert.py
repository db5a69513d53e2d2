"""The converter command lines: every key layout users hold, the report and
metadata, the classifier rules, and every kind of bad input (one line naming
the file and keys, exit status 2, no traceback, no output directory)."""

import hashlib
import importlib
import json
import os
import pickle

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch

from convert import torch_models
from convert.torch_io import METADATA_FILE, run_cli
from pasnet_jax.models.pasnet import PASNet
from pasnet_jax.models.pose import OpenPose
from tests import torch_helpers as th

NUM_CLASSES = 5


def restore(directory):
  return ocp.StandardCheckpointer().restore(directory.absolute())


def convert(*args):
  """Runs a converter as a user would, in a fresh interpreter; its stdout."""
  result = th.run_converter(*args)
  assert result.returncode == 0, result.stderr
  return result.stdout


def run_here(capsys, module, *args):
  """(exit status, stdout, stderr) of a converter's command line run in this
  process: the variants of what `convert` runs as a user would, without
  another interpreter start-up (torch and JAX imports) each."""
  status = run_cli(
      importlib.import_module(f'convert.{module}').main, [str(a) for a in args])
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def convert_here(capsys, module, *args):
  status, stdout, stderr = run_here(capsys, module, *args)
  assert status == 0, stderr
  return stdout


def tree_shapes(tree):
  return jax.tree.map(lambda leaf: tuple(leaf.shape), tree)


def assert_same_variables(actual, expected):
  assert tree_shapes(actual) == tree_shapes(expected)
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


@pytest.fixture(scope='module')
def workdir(module_tmp):
  return module_tmp('convert')


@pytest.fixture(scope='module')
def eco(workdir):
  return th.randomize(torch_models.ECO(NUM_CLASSES), seed=0)


@pytest.fixture(scope='module')
def eco_file(eco, workdir):
  return th.save_eco(eco, workdir / 'eco.pth.tar', 'tsn')


@pytest.fixture(scope='module')
def eco_converted(eco_file, workdir):
  """The TSN-wrapper file converted: (stdout, variables, metadata)."""
  out = workdir / 'eco_out'
  stdout = convert('eco', eco_file, out)
  return stdout, restore(out), json.loads((out / METADATA_FILE).read_text())


@pytest.fixture(scope='module')
def openpose(workdir):
  return th.randomize(torch_models.OpenPose(), seed=1)


@pytest.fixture(scope='module')
def openpose_file(openpose, workdir):
  return th.save_openpose(openpose, workdir / 'body_pose_model.pth', 'flat')


@pytest.fixture(scope='module')
def openpose_converted(openpose_file, workdir):
  out = workdir / 'openpose_out'
  convert('openpose', openpose_file, out)
  return out, restore(out)


# ---------------------------------------------------------------- ECO


def test_eco_variables_have_the_structure_pasnet_a_takes(eco_converted):
  _, variables, _ = eco_converted
  model = PASNet(NUM_CLASSES, fusion='A')
  expected = jax.eval_shape(model.init, jax.random.key(0),
                            np.zeros((1, 1, 32, 32, 3), np.float32))
  assert tree_shapes(variables) == tree_shapes(expected)


def test_eco_tensors_land_in_flax_layout(eco, eco_converted):
  _, variables, _ = eco_converted
  state = {key: value.numpy() for key, value in eco.state_dict().items()}
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(
      params['appearance']['conv1_7x7_s2']['kernel'],
      state['base_model.conv1_7x7_s2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      params['spatiotemporal']['res4a_1']['kernel'],
      state['base_model.res4a_1.weight'].transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(
      params['appearance']['inception_3b_3x3_bn']['scale'],
      state['base_model.inception_3b_3x3_bn.weight'])
  np.testing.assert_array_equal(stats['spatiotemporal']['res5b_bn']['var'],
                                state['base_model.res5b_bn.running_var'])
  np.testing.assert_array_equal(params['classifier']['kernel'],
                                state['new_fc.weight'].T)


def test_eco_report_and_metadata(eco_file, eco_converted):
  stdout, _, metadata = eco_converted
  assert 'mapped: 186 tensors (appearance 114, spatiotemporal 70, classifier 2)' in stdout
  assert 'ignored: 30 x <bn>.num_batches_tracked' in stdout
  assert "ECO layout official (the ECO authors' release" in stdout
  assert metadata['eco_layout'] == 'official'
  assert 'missing: none' in stdout
  assert metadata['source'] == str(eco_file.absolute())
  assert metadata['sha256'] == hashlib.sha256(eco_file.read_bytes()).hexdigest()
  assert 'module.base_model.*' in metadata['layout']
  assert 'epoch' in metadata['layout']
  assert metadata['num_classes'] == NUM_CLASSES


@pytest.mark.parametrize('layout, described', [
    ('tsn_without_module', 'keys base_model.*, classifier new_fc.*'),
    ('bare', 'bare state dict; keys module.base_model.*'),
    ('kinetics', 'module.base_model.fc_final.* (Kinetics)'),
    ('tsn_legacy_file', 'keys module.base_model.*, classifier module.new_fc.*'),
])
def test_every_eco_layout_gives_the_same_variables(capsys, eco, eco_converted,
                                                   workdir, layout, described):
  checkpoint = th.save_eco(eco, workdir / f'eco_{layout}.pth.tar', layout)
  stdout = convert_here(capsys, 'eco', checkpoint,
                        workdir / f'eco_{layout}_out')
  assert described in stdout
  assert_same_variables(
      restore(workdir / f'eco_{layout}_out'), eco_converted[1])


def test_classifier_of_another_size_is_dropped(capsys, eco_file, eco_converted,
                                               workdir):
  out = workdir / 'eco_7_classes'
  stdout = convert_here(capsys, 'eco', eco_file, out, '--num-classes', 7)
  assert (
      'dropped: module.new_fc.weight, module.new_fc.bias (classifier has 5 classes, '
      '--num-classes asks for 7') in stdout
  variables = restore(out)
  assert 'classifier' not in variables['params']
  assert_same_variables(variables['params']['appearance'],
                        eco_converted[1]['params']['appearance'])
  assert json.loads((out / METADATA_FILE).read_text())['num_classes'] is None


def test_drop_classifier(capsys, eco_file, workdir):
  out = workdir / 'eco_no_classifier'
  stdout = convert_here(capsys, 'eco', eco_file, out, '--drop-classifier')
  assert 'as --drop-classifier asks' in stdout
  assert 'classifier' not in restore(out)['params']


# ---------------------------------------------------------------- OpenPose


def test_openpose_variables_have_the_structure_openpose_takes(
    openpose, openpose_converted):
  _, variables = openpose_converted
  expected = jax.eval_shape(OpenPose().init, jax.random.key(0),
                            np.zeros((1, 32, 32, 3), np.float32))
  assert tree_shapes(variables) == tree_shapes(expected)
  np.testing.assert_array_equal(
      variables['params']['Mconv7_stage6_L2']['kernel'],
      openpose.Mconv7_stage6_L2.weight.detach().numpy().transpose(2, 3, 1, 0))


def test_nested_openpose_layout_gives_the_same_variables(
    capsys, openpose, openpose_converted, workdir):
  checkpoint = th.save_openpose(openpose, workdir / 'nested.pth', 'nested')
  stdout = convert_here(capsys, 'openpose', checkpoint, workdir / 'nested_out')
  assert 'nested keys model0.*' in stdout
  assert 'mapped: 184 tensors' in stdout
  assert_same_variables(restore(workdir / 'nested_out'), openpose_converted[1])


def kinetics_keys():
  """{key: shape} of the authors' Kinetics ECO-Lite, as their ECO.yaml builds it."""
  lines = (th.REPO_ROOT / 'tests' / 'fixtures' /
           'eco_lite_rgb_kinetics_keys.txt').read_text().splitlines()
  keys = {}
  for line in lines:
    key, shape = line.split()
    keys[key] = () if shape == '()' else tuple(int(n) for n in shape.split('x'))
  return keys


def test_reference_has_the_authors_kinetics_keys(eco):
  """The reference ECO, saved as the Kinetics layout, has exactly the keys
  and shapes of the checkpoint users hold (400 classes)."""
  reference = th.randomize(torch_models.ECO(400), seed=0)
  state = {
      f'module.{key}'.replace('new_fc.', 'base_model.fc_final.'): tuple(value.shape)
      for key, value in reference.state_dict().items()
  }
  assert state == kinetics_keys()


def test_authors_kinetics_checkpoint_converts(capsys, tmp_path):
  """A file with the exact keys of ECO_Lite_rgb_model_Kinetics.pth.tar, as
  a user holds it, converts with --drop-classifier, every 2D and 3D tensor
  mapped to where it belongs."""
  generator = torch.Generator().manual_seed(7)
  state = {}
  for key, shape in kinetics_keys().items():
    if key.endswith('num_batches_tracked'):
      state[key] = torch.tensor(1000, dtype=torch.long)
    else:
      state[key] = torch.rand(shape, generator=generator) + 0.5
  checkpoint = tmp_path / 'ECO_Lite_rgb_model_Kinetics.pth.tar'
  torch.save({**th.TRAINING_CHECKPOINT, 'state_dict': state}, checkpoint)
  out = tmp_path / 'eco_kinetics'
  stdout = convert_here(capsys, 'eco', checkpoint, out, '--drop-classifier')
  assert 'classifier module.base_model.fc_final.* (Kinetics)' in stdout
  assert 'mapped: 184 tensors (appearance 114, spatiotemporal 70)' in stdout
  assert 'ECO layout official' in stdout
  assert 'dropped: module.base_model.fc_final.weight' in stdout
  assert '(as --drop-classifier asks)' in stdout
  assert 'missing: none' in stdout
  metadata = json.loads((out / METADATA_FILE).read_text())
  assert metadata['eco_layout'] == 'official'
  assert metadata['num_classes'] is None
  variables = restore(out)
  params = variables['params']
  assert 'classifier' not in params
  np.testing.assert_array_equal(
      params['spatiotemporal']['res4a_down']['kernel'],
      state['module.base_model.res4a_down.weight'].numpy().transpose(2, 3, 4, 1, 0))
  np.testing.assert_array_equal(
      params['spatiotemporal']['res3a_2']['bias'],
      state['module.base_model.res3a_2.bias'].numpy())
  np.testing.assert_array_equal(
      variables['batch_stats']['spatiotemporal']['res5a_bn']['mean'],
      state['module.base_model.res5a_bn.running_mean'].numpy())
  model = PASNet(NUM_CLASSES, fusion='A')
  expected = jax.eval_shape(model.init, jax.random.key(0),
                            np.zeros((1, 1, 32, 32, 3), np.float32))
  del expected['params']['classifier']
  assert tree_shapes(variables) == tree_shapes(expected)


def test_early_layout_converts_and_is_recorded(capsys, tmp_path):
  """zhang-can/ECO-pytorch's 3D part (res3a_1, no shortcut, no bias)."""
  early = th.randomize(torch_models.ECO(NUM_CLASSES, layout='early'), seed=2)
  checkpoint = th.save_eco(early, tmp_path / 'early.pth.tar', 'tsn')
  out = tmp_path / 'early_out'
  stdout = convert_here(capsys, 'eco', checkpoint, out)
  assert 'ECO layout early (the early port, zhang-can/ECO-pytorch)' in stdout
  assert 'mapped: 176 tensors (appearance 114, spatiotemporal 60, classifier 2)' in stdout
  assert json.loads((out / METADATA_FILE).read_text())['eco_layout'] == 'early'
  spatiotemporal = restore(out)['params']['spatiotemporal']
  assert 'res3a_1' in spatiotemporal and 'res4a_down' not in spatiotemporal
  assert 'bias' not in spatiotemporal['res4a_1']
  model = PASNet(NUM_CLASSES, fusion='A', eco_layout='early')
  expected = jax.eval_shape(model.init, jax.random.key(0),
                            np.zeros((1, 1, 32, 32, 3), np.float32))
  assert tree_shapes(restore(out)) == tree_shapes(expected)


def test_checkpoint_with_both_layouts_is_refused(capsys, eco, tmp_path):
  state = {f'module.{k}': v for k, v in eco.state_dict().items()}
  state['module.base_model.res3a_1.weight'] = torch.zeros(128, 96, 3, 3, 3)
  checkpoint = tmp_path / 'mixed.pth.tar'
  torch.save({**th.TRAINING_CHECKPOINT, 'state_dict': state}, checkpoint)
  status, _, stderr = run_here(capsys, 'eco', checkpoint, tmp_path / 'out')
  assert status == 2
  assert 'layers of both ECO layouts' in stderr
  assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------- PAS-Net


def test_pasnet_assembly_reports_new_and_dropped_parts(eco_converted,
                                                       openpose_converted,
                                                       workdir):
  out = workdir / 'pasnet_I'
  stdout = convert('pasnet', '--eco', workdir / 'eco_out', '--openpose',
                   openpose_converted[0], '--fusion', 'I', '--num-classes', 7,
                   out)
  eco_out = workdir / 'eco_out'
  assert f'new: classifier (ECO_OUT {eco_out} has 5 classes, this model 7)' in stdout
  assert 'new: spatiotemporal/res3a_2 (fusion I feeds it 128 channels' in stdout
  assert (f'dropped: ECO_OUT {eco_out} appearance (114 tensors) (fusion I has '
          'no use for it)') in stdout
  assert 'ECO layout official' in stdout
  variables = restore(out)
  assert 'appearance' not in variables['params']
  assert variables['params']['spatiotemporal']['res3a_2']['kernel'].shape[
      -2] == 128
  assert_same_variables(variables['params']['pose'],
                        openpose_converted[1]['params'])
  assert_same_variables(variables['params']['spatiotemporal']['res5b_2'],
                        eco_converted[1]['params']['spatiotemporal']['res5b_2'])


def test_pasnet_conv_style_gets_the_pass_through_init(capsys, eco_converted,
                                                      openpose_converted,
                                                      workdir):
  out = workdir / 'pasnet_conv'
  convert_here(capsys, 'pasnet', '--eco', workdir / 'eco_out', '--openpose',
               openpose_converted[0], '--fusion', 'conv(A,I,F)',
               '--num-classes', NUM_CLASSES, out)
  kernel = restore(out)['params']['fusion']['conv']['kernel']
  assert kernel.shape == (1, 1, 96 + 128 + 128, 96)
  np.testing.assert_array_equal(kernel[0, 0, :96], np.eye(96))
  np.testing.assert_array_equal(kernel[0, 0, 96:], 0)


def test_force_replaces_an_existing_output(capsys, eco_file, workdir):
  out = workdir / 'replaced'
  out.mkdir()
  (out / 'old').write_text('old')
  convert_here(capsys, 'eco', eco_file, out, '--force')
  assert not (out / 'old').exists()
  assert restore(out)['params']['classifier']['bias'].shape == (NUM_CLASSES,)
  assert [p.name for p in workdir.iterdir() if p.name.startswith('.')] == []


# ---------------------------------------------------------------- bad input


class Payload:
  """A pickle that creates a marker file when unpickled: code execution."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def bad_files(directory, eco, openpose_file):
  """{case: (converter, input file, words the message must contain)}."""
  state = eco.state_dict()
  cases = {}

  def write(name, save):
    path = directory / name
    save(path)
    return path

  cases['missing file'] = ('eco', directory / 'absent.pth.tar',
                           ['no such file'])
  cases['directory'] = ('eco', directory, ['is a directory'])
  cases['empty file'] = ('eco', write('empty.pth',
                                      lambda p: p.write_bytes(b'')),
                         ['not a PyTorch checkpoint'])
  cases['text file'] = ('openpose',
                        write('notes.pth', lambda p: p.write_text('hello\n')),
                        ['not a PyTorch checkpoint'])
  whole = th.save_eco(eco, directory / 'whole.pth.tar', 'tsn').read_bytes()
  cases['truncated'] = ('eco',
                        write('truncated.pth.tar',
                              lambda p: p.write_bytes(whole[:len(whole) // 2])),
                        ['truncated'])
  cases['not a state dict'] = ('eco',
                               write('list.pth',
                                     lambda p: torch.save([1, 2], p)),
                               ['not a checkpoint', 'list'])
  cases['OpenPose given to convert.eco'] = ('eco', openpose_file, [
      'OpenPose checkpoint', 'conv1_1.weight', 'convert.openpose'
  ])
  cases['ECO given to convert.openpose'] = (
      'openpose', directory / 'whole.pth.tar',
      ['ECO checkpoint', 'module.base_model.conv1_7x7_s2', 'convert.eco'])
  without = {k: v for k, v in state.items() if k != 'base_model.res5b_2.weight'}
  cases['ECO tensor missing'] = (
      'eco',
      write('missing.pth.tar',
            lambda p: torch.save({'state_dict': without}, p)),
      ['missing tensors base_model.res5b_2.weight'])
  misshapen = {
      **state, 'base_model.conv2_3x3.weight': torch.zeros(192, 64, 5, 5)
  }
  cases['ECO tensor misshapen'] = (
      'eco',
      write('misshapen.pth.tar',
            lambda p: torch.save({'state_dict': misshapen}, p)), [
                'wrong shape', 'base_model.conv2_3x3.weight (192, 64, 5, 5)',
                '(192, 64, 3, 3)'
            ])
  pose_state = torch.load(openpose_file, weights_only=True)
  nested = {
      th.nested_openpose_key(k): v
      for k, v in pose_state.items()
      if k != 'Mconv7_stage6_L2.bias'
  }
  cases['OpenPose tensor missing'] = (
      'openpose', write('nested_missing.pth', lambda p: torch.save(nested, p)),
      ['missing tensors model6_2.Mconv7_stage6_L2.bias'])
  wrong = {**pose_state, 'conv4_4_CPM.weight': torch.zeros(96, 256, 3, 3)}
  cases['OpenPose tensor misshapen'] = ('openpose',
                                        write('pose_misshapen.pth',
                                              lambda p: torch.save(wrong, p)),
                                        [
                                            'wrong shape',
                                            'conv4_4_CPM.weight (96, 256, 3, 3)'
                                        ])
  return cases


@pytest.fixture(scope='module')
def bad_inputs(module_tmp, eco, openpose_file):
  return bad_files(module_tmp('bad'), eco, openpose_file)


BAD_CASES = [
    'missing file', 'directory', 'empty file', 'text file', 'truncated',
    'not a state dict', 'OpenPose given to convert.eco',
    'ECO given to convert.openpose', 'ECO tensor missing',
    'ECO tensor misshapen', 'OpenPose tensor missing',
    'OpenPose tensor misshapen'
]


def assert_refused(result, out, path, words):
  """Exit status 2, one line naming the file and what is wrong, no output."""
  assert result.returncode == 2, result.stdout + result.stderr
  assert 'Traceback' not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: ') and str(path) in lines[0], lines[0]
  for word in words:
    assert word in lines[0], lines[0]
  assert not out.exists()
  assert [p.name for p in out.parent.iterdir() if p.name.startswith('.')] == []


@pytest.mark.parametrize('case', BAD_CASES)
def test_bad_checkpoint_is_refused(bad_inputs, tmp_path, case):
  converter, path, words = bad_inputs[case]
  out = tmp_path / 'out'
  assert_refused(th.run_converter(converter, path, out), out, path, words)


@pytest.mark.parametrize('container', ['torch.save', 'raw pickle'])
def test_pickle_that_would_run_code_is_refused_and_runs_nothing(
    tmp_path, container):
  marker = tmp_path / 'code_ran'
  payload = Payload(marker)
  # The payload works: unpickled the unsafe way it does create the marker.
  pickle.loads(pickle.dumps(payload))
  assert marker.exists()
  marker.unlink()

  path = tmp_path / 'malicious.pth.tar'
  if container == 'torch.save':
    torch.save({
        'state_dict': {
            'new_fc.bias': torch.zeros(3)
        },
        'hook': payload
    }, path)
  else:
    path.write_bytes(pickle.dumps(payload))
  out = tmp_path / 'out'
  assert_refused(
      th.run_converter('eco', path, out), out, path, ['refused', 'nothing'])
  assert not marker.exists()


def test_existing_output_is_refused_without_force(eco_file, tmp_path):
  out = tmp_path / 'existing'
  out.mkdir()
  (out / 'keep').write_text('mine')
  result = th.run_converter('eco', eco_file, out)
  assert result.returncode == 2
  assert result.stderr.strip(
  ) == f'error: {out}: already exists; pass --force to replace it'
  assert (out / 'keep').read_text() == 'mine'


def test_pasnet_refuses_inputs_that_are_not_converter_outputs(
    capsys, eco_converted, openpose_converted, workdir, tmp_path):
  out = tmp_path / 'out'
  swapped = run_here(capsys, 'pasnet', '--eco', openpose_converted[0],
                     '--openpose', workdir / 'eco_out', '--fusion', 'A+pool(I)',
                     '--num-classes', 5, out)
  not_converted = run_here(capsys, 'pasnet', '--eco', tmp_path, '--fusion', 'A',
                           '--num-classes', 5, out)
  no_pose = run_here(capsys, 'pasnet', '--eco', workdir / 'eco_out', '--fusion',
                     'conv(A,I)', '--num-classes', 5, out)
  assert swapped == (2, '',
                     f'error: {openpose_converted[0].absolute()}: written by '
                     'convert.openpose, expected an output of convert.eco\n')
  assert not_converted == (2, '',
                           f'error: {tmp_path}: not an output of convert.eco '
                           f'(no readable {METADATA_FILE})\n')
  assert no_pose[0] == 2 and '--openpose OPENPOSE_OUT' in no_pose[2]
  assert not out.exists()


def test_unknown_fusion_style_lists_the_valid_ones(capsys, workdir, tmp_path):
  with pytest.raises(SystemExit) as exit_info:
    run_here(capsys, 'pasnet', '--eco', workdir / 'eco_out', '--fusion', 'A+B',
             '--num-classes', 5, tmp_path / 'out')
  assert exit_info.value.code == 2
  stderr = capsys.readouterr().err
  assert "invalid choice: 'A+B'" in stderr and 'conv(A,I,F)' in stderr
  assert not (tmp_path / 'out').exists()
