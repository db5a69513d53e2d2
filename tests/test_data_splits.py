"""The official split files, parsed as published (made-up small ones here)."""

import os
import pathlib

import pytest

from pasnet_jax.data import archives
from pasnet_jax.data import splits
from pasnet_jax.errors import DatasetError
from tests import data_helpers


def _text(files):
  return {name.rsplit('/', 1)[-1]: data.decode() for name, data in files.items()}


def test_ucf101_lists_with_crlf_and_handstand_spelling():
  train = ['ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
           'HandstandPushups/v_HandStandPushups_g08_c01.avi']
  test = ['YoYo/v_YoYo_g01_c01.avi',
          'HandstandPushups/v_HandStandPushups_g01_c04.avi']
  files = _text(data_helpers.ucf101_split_files(train, test, split_number=2))
  assert '\r\n' in files['trainlist02.txt']
  listed = splits.ucf101_split(files, 2, 'splits.zip')
  assert listed['train'] == [
      splits.ListedVideo('ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01', 0),
      splits.ListedVideo('HandstandPushups/v_HandStandPushups_g08_c01', 36)]
  assert listed['test'] == [
      splits.ListedVideo('YoYo/v_YoYo_g01_c01', 100),
      splits.ListedVideo('HandstandPushups/v_HandStandPushups_g01_c04', 36)]


def test_ucf101_class_index_is_one_based_and_official():
  text = data_helpers.ucf101_class_index().decode()
  assert splits.parse_ucf101_class_index(text) == splits.UCF101_CLASSES
  assert len(splits.UCF101_CLASSES) == 101
  assert splits.UCF101_CLASSES[36] == 'HandstandPushups'
  swapped = text.replace('1 ApplyEyeMakeup', '1 ApplyLipstick', 1)
  with pytest.raises(DatasetError, match='official'):
    splits.parse_ucf101_class_index(swapped)
  with pytest.raises(DatasetError, match='line 2'):
    splits.parse_ucf101_class_index('1 ApplyEyeMakeup\r\n3 ApplyLipstick\r\n')


def test_ucf101_train_label_must_match_the_folder():
  with pytest.raises(DatasetError, match=r'trainlist01.txt line 1.*YoYo'):
    splits.parse_ucf101_list('YoYo/v_YoYo_g08_c01.avi 5\r\n', 'trainlist01.txt')
  with pytest.raises(DatasetError, match='testlist01.txt line 2'):
    splits.parse_ucf101_list('YoYo/v_YoYo_g01_c01.avi\r\nNoSuchClass/x.avi\r\n',
                             'testlist01.txt')


def test_hmdb51_codes_one_train_two_test_zero_neither():
  files = _text(data_helpers.hmdb51_split_files({
      'brush_hair': {'a_brush_hair_0.avi': 1, 'b_brush_hair_0.avi': 2,
                     'c_brush_hair_0.avi': 0},
      'wave': {'d_wave_0.avi': 2}}, split_number=3))
  assert len(files) == 51
  listed = splits.hmdb51_split(files, 3, 'test_train_splits.rar')
  assert listed['train'] == [splits.ListedVideo('brush_hair/a_brush_hair_0', 0)]
  assert listed['test'] == [splits.ListedVideo('brush_hair/b_brush_hair_0', 0),
                            splits.ListedVideo('wave/d_wave_0', 50)]


def test_hmdb51_bad_code_and_missing_file_name_the_file():
  files = _text(data_helpers.hmdb51_split_files({'wave': {'d_wave_0.avi': 2}}))
  bad = dict(files, **{'wave_test_split1.txt': 'd_wave_0.avi 3 \r\n'})
  with pytest.raises(DatasetError, match='wave_test_split1.txt line 1'):
    splits.hmdb51_split(bad, 1, 'test_train_splits.rar')
  del files['kiss_test_split1.txt']
  with pytest.raises(DatasetError,
                     match='kiss_test_split1.txt is missing from test_train'):
    splits.hmdb51_split(files, 1, 'test_train_splits.rar')


def _official_split_files(variable, names):
  """Split files from the manual dir named by an environment variable."""
  manual_dir = os.environ.get(variable)
  if not manual_dir:
    pytest.skip(f'set {variable} to a folder holding the published archives')
  source = archives.find_input(manual_dir, names)
  if source is None:
    pytest.skip(f'none of {names} in {manual_dir}')
  return archives.read_text_files(pathlib.Path(source)), str(source)


@pytest.mark.archives
def test_official_ucf101_split_sizes():
  files, source = _official_split_files(
      'PASNET_UCF101_DIR', ('UCF101TrainTestSplits-RecognitionTask.zip',
                            'ucfTrainTestlist'))
  # Split 1 must be there; 2 and 3 are checked where their lists are, so
  # that a folder of the split 1 lists alone can be checked too.
  numbers = [number for number in splits.UCF101_SPLIT_SIZES
             if number == 1 or f'trainlist{number:02d}.txt' in files]
  for number in numbers:
    train, test = splits.UCF101_SPLIT_SIZES[number]
    listed = splits.ucf101_split(files, number, source)
    assert (len(listed['train']), len(listed['test'])) == (train, test)


@pytest.mark.archives
def test_official_hmdb51_split_sizes():
  files, source = _official_split_files(
      'PASNET_HMDB51_DIR', ('test_train_splits.rar', 'testTrainMulti_7030_splits'))
  for number, (train, test) in splits.HMDB51_SPLIT_SIZES.items():
    listed = splits.hmdb51_split(files, number, source)
    assert (len(listed['train']), len(listed['test'])) == (train, test)
