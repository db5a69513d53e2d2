"""Reading RAR/ZIP archives as published, and the RAR4 writer the tests use."""

import pathlib
import subprocess

import pytest
import rarfile

from pasnet_jax.data import archives
from pasnet_jax.errors import DatasetError
from tests import data_helpers

VIDEO = b'RIFF' + bytes(range(256)) * 4


@pytest.fixture(scope='module')
def nested_rar(module_tmp) -> pathlib.Path:
  """hmdb51_org.rar-like: an outer RAR of per-class RARs."""
  root = module_tmp('rar')
  inner = data_helpers.rar4_bytes({'brush_hair/a_brush_hair_0.avi': VIDEO,
                                   'brush_hair/b_brush_hair_1.avi': b'x'})
  return data_helpers.write_rar4(root / 'hmdb51_org.rar',
                                 {'brush_hair.rar': inner})


def test_bsdtar_reads_the_written_rar_nested(nested_rar, tmp_path):
  # An unpacker other than rarfile's reading: scripts/setup.sh requires
  # bsdtar, through which rarfile streams compressed members.
  def extract(archive, dest):
    subprocess.run(['bsdtar', '-xf', str(archive), '-C', str(dest)],
                   check=True, capture_output=True)
  extract(nested_rar, tmp_path)
  extract(tmp_path / 'brush_hair.rar', tmp_path)
  assert (tmp_path / 'brush_hair' / 'a_brush_hair_0.avi').read_bytes() == VIDEO


def test_rarfile_reads_members_directly_and_through_the_unpacker(
    nested_rar, tmp_path, monkeypatch):
  inner = tmp_path / 'brush_hair.rar'
  archives.extract_member(str(nested_rar), 'brush_hair.rar', inner)
  member = 'brush_hair/a_brush_hair_0.avi'
  assert archives.read_member(str(inner), member) == VIDEO
  # Compressed members always go through the unpacker; stored ones can be
  # sent the same way, which checks the command line rarfile is given.
  assert archives._configure_unpacker() is not None
  monkeypatch.setattr(rarfile, 'FORCE_TOOL', True)
  assert rarfile.RarFile(str(inner)).read(member) == VIDEO


def test_index_videos_unpacks_nested_rars_once(nested_rar, tmp_path):
  refs = archives.index_videos(nested_rar, tmp_path / 'scratch')
  assert set(refs) == {'brush_hair/a_brush_hair_0', 'brush_hair/b_brush_hair_1'}
  ref = refs['brush_hair/a_brush_hair_0']
  assert archives.read_video_bytes(ref) == VIDEO
  unpacked = tmp_path / 'scratch' / 'hmdb51_org.rar' / 'brush_hair.rar'
  assert pathlib.Path(ref.path) == unpacked
  mtime = unpacked.stat().st_mtime_ns
  archives.index_videos(nested_rar, tmp_path / 'scratch')
  assert unpacked.stat().st_mtime_ns == mtime


def test_index_videos_of_a_folder_keys_by_class_folder(tmp_path):
  video = tmp_path / 'UCF-101' / 'HandstandPushups' / 'v_HandStandPushups_g01_c01.avi'
  video.parent.mkdir(parents=True)
  video.write_bytes(VIDEO)
  refs = archives.index_videos(tmp_path / 'UCF-101', tmp_path / 'scratch')
  assert refs == {'handstandpushups/v_handstandpushups_g01_c01':
                  archives.VideoRef(str(video))}


def test_read_text_files_from_zip_rar_and_folder(tmp_path):
  files = {'ucfTrainTestlist/classInd.txt': b'1 A\r\n',
           'ucfTrainTestlist/testlist01.txt': b'A/v_A.avi\r\n'}
  expected = {'classInd.txt': '1 A\r\n', 'testlist01.txt': 'A/v_A.avi\r\n'}
  zipped = data_helpers.write_zip(tmp_path / 'splits.zip', files)
  packed = data_helpers.write_rar4(tmp_path / 'splits.rar', files)
  assert archives.read_text_files(zipped) == expected
  assert archives.read_text_files(packed) == expected
  for name, data in files.items():
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(data)
  assert archives.read_text_files(tmp_path / 'ucfTrainTestlist') == expected


def test_damaged_rar_is_a_dataset_error_naming_the_file(tmp_path):
  broken = tmp_path / 'UCF101.rar'
  broken.write_bytes(b'Rar!\x1a\x07\x00' + b'\x00' * 20)
  with pytest.raises(DatasetError, match='UCF101.rar'):
    archives.list_members(str(broken))


def test_find_input_ignores_case(tmp_path):
  (tmp_path / 'ucf101.RAR').write_bytes(b'')
  assert archives.find_input(str(tmp_path), ('UCF101.rar', 'UCF-101')) == (
      tmp_path / 'ucf101.RAR')
  assert archives.find_input(str(tmp_path), ('hmdb51_org.rar',)) is None
