"""Reading the published archives (RAR, ZIP) or the folders they unpack to.

UCF-101 and HMDB-51 are published as RAR archives (HMDB-51's videos as a RAR
of 51 per-class RARs) with split files in a ZIP or RAR. `rarfile` reads the
headers and the members stored without compression itself; compressed
members it pipes through a system unpacker, here `bsdtar` (Debian's
libarchive-tools, which scripts/setup.sh installs) or RARLAB's `unrar`.
"""

import dataclasses
import functools
import os
import pathlib
import subprocess
import zipfile
import zlib

import rarfile

from pasnet_jax.errors import DatasetError

VIDEO_SUFFIXES = ('.avi', '.mp4', '.mkv', '.webm', '.mov', '.mpg', '.mpeg')
# What zipfile raises for a damaged archive, besides OSError: an unknown
# version or method (NotImplementedError), a password (RuntimeError), a
# member cut short (EOFError) or a broken deflate stream (zlib.error).
_ZIP_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError,
               EOFError, zlib.error)


@dataclasses.dataclass(frozen=True)
class VideoRef:
  """Where one video's bytes are: a file, or a member of a RAR archive.

  Small and picklable, so that worker processes can be sent a list of them.
  """
  path: str
  member: str | None = None

  def __str__(self):
    return f'{self.path}:{self.member}' if self.member else self.path


def find_input(manual_dir: str, names: tuple[str, ...]) -> pathlib.Path | None:
  """The first of `names` (an archive or a folder) present in `manual_dir`.

  Names are matched case-insensitively: archives unpacked on Windows and
  copied around do not keep their case reliably.
  """
  present = {p.name.lower(): p for p in pathlib.Path(manual_dir).iterdir()}
  for name in names:
    if name.lower() in present:
      return present[name.lower()]
  return None


@functools.lru_cache(maxsize=8)
def open_rar(path: str) -> rarfile.RarFile:
  """Opens a RAR archive once per process, with errors that say what to do."""
  try:
    archive = rarfile.RarFile(path)
  except (rarfile.Error, OSError) as e:
    raise DatasetError(
        f'{path} is not a readable RAR archive ({e}). Download it again or '
        'unpack it with another tool and put the unpacked folder in its '
        'place.') from e
  if archive.strerror():
    # rarfile lists the members before a damaged header and notes the error.
    raise DatasetError(
        f'{path} is damaged or incomplete ({archive.strerror()}). Download it '
        'again.')
  size = os.path.getsize(path)
  # An archive cut short at a member's data lists that member, and rarfile
  # notes no error; reading it fails later, video by video.
  cut = [info.filename for info in archive.infolist()
         if info.data_offset + info.compress_size > size]
  if cut:
    raise DatasetError(f'{path} is incomplete: it ends ({size} bytes) inside '
                       f'{cut[0]}. Download it again.')
  if archive.needs_password():
    raise DatasetError(f'{path} is password-protected; unpack it yourself and '
                       'put the unpacked folder in its place.')
  if archive.is_solid():
    # Each member of a solid archive can only be unpacked by unpacking all
    # members before it, which makes reading one video at a time quadratic.
    raise DatasetError(
        f'{path} is a solid RAR archive, which cannot be read one video at a '
        f'time. Unpack it (e.g. `bsdtar -xf {path} -C '
        f'{os.path.dirname(path) or "."}`), remove the archive and build '
        'again.')
  if any(info.compress_type != rarfile.RAR_M0 for info in archive.infolist()):
    if _configure_unpacker() is None:
      raise DatasetError(
          f'{path} holds compressed members and no RAR unpacker that can '
          'write a member to a pipe was found. Install bsdtar (Debian/Ubuntu: '
          '`apt-get install libarchive-tools`, or run scripts/setup.sh) and '
          'build again.')
  return archive


class _BsdtarSetup(rarfile.ToolSetup):
  """rarfile's bsdtar command line without the "--" it puts after "-f":
  bsdtar takes that "--" for the archive's name."""

  def get_cmdline(self, key, pwd, nodash=False):
    return super().get_cmdline(key, pwd, nodash=True)


def _is_rarlab_unrar() -> bool:
  # Debian installs unrar-free as `unrar`; it cannot write a member to
  # stdout, which is how rarfile reads compressed members.
  try:
    result = subprocess.run([rarfile.UNRAR_TOOL], capture_output=True,
                            text=True, check=False)
  except OSError:
    return False
  return 'UNRAR' in result.stdout


@functools.cache
def _configure_unpacker() -> rarfile.ToolSetup | None:
  """Makes rarfile use an unpacker that works here; None if there is none.

  rarfile's own choice takes `unrar` first even where that is unrar-free,
  and its bsdtar command line fails, so the choice is made here and set as
  rarfile's current one (the setup every later rarfile read uses).
  """
  candidates = [_BsdtarSetup(rarfile.BSDTAR_CONFIG)]
  if _is_rarlab_unrar():
    candidates.insert(0, rarfile.ToolSetup(rarfile.UNRAR_CONFIG))
  for setup in candidates:
    if setup.check():
      rarfile.CURRENT_SETUP = setup
      return setup
  return None


def list_members(archive_path: str) -> list[str]:
  """Names of the files (not folders) in a RAR or ZIP archive, '/'-separated."""
  if zipfile.is_zipfile(archive_path):
    try:
      with zipfile.ZipFile(archive_path) as archive:
        return [n for n in archive.namelist() if not n.endswith('/')]
    except (*_ZIP_ERRORS, OSError) as e:
      raise DatasetError(
          f'{archive_path} is not a readable ZIP archive ({e}). Download it '
          'again, or unpack it with another tool and put the unpacked folder '
          'in its place.') from e
  return [info.filename for info in open_rar(archive_path).infolist()
          if info.is_file()]


def read_member(archive_path: str, member: str) -> bytes:
  """The bytes of one member of a RAR or ZIP archive."""
  try:
    if zipfile.is_zipfile(archive_path):
      with zipfile.ZipFile(archive_path) as archive:
        return archive.read(member)
    return open_rar(archive_path).read(member)
  except (rarfile.Error, *_ZIP_ERRORS, OSError) as e:
    raise DatasetError(
        f'Cannot read {member} from {archive_path} ({e}). The archive is '
        'damaged or incomplete: download it again.') from e


def read_video_bytes(ref: VideoRef) -> bytes:
  if ref.member is None:
    return pathlib.Path(ref.path).read_bytes()
  return read_member(ref.path, ref.member)


def extract_member(archive_path: str, member: str, dest: pathlib.Path) -> None:
  """Writes one member to `dest`, reusing a complete earlier extraction.

  The member is written under a temporary name and renamed when complete, so
  an interrupted build never leaves a partial file that a rerun would trust.
  """
  size = open_rar(archive_path).getinfo(member).file_size
  if dest.exists() and dest.stat().st_size == size:
    return
  dest.parent.mkdir(parents=True, exist_ok=True)
  partial = dest.with_name(dest.name + '.partial')
  try:
    with open_rar(archive_path).open(member) as src, open(partial, 'wb') as out:
      while chunk := src.read(1 << 20):
        out.write(chunk)
  except (rarfile.Error, OSError) as e:
    raise DatasetError(
        f'Cannot unpack {member} from {archive_path} ({e}). The archive is '
        'damaged or incomplete: download it again.') from e
  partial.rename(dest)


def read_text_files(source: pathlib.Path, suffix: str = '.txt') -> dict[str, str]:
  """{base name: text} of the files ending in `suffix` in an archive or folder.

  Split files are keyed by base name: where the archive or folder nests them
  does not matter, and the names are unique within one dataset's splits.
  """
  if source.is_dir():
    paths = [p for p in source.rglob('*') if p.is_file()
             and p.name.lower().endswith(suffix)]
    return {p.name: _decode_text(p.read_bytes(), str(p)) for p in paths}
  members = [m for m in list_members(str(source))
             if m.lower().endswith(suffix)]
  return {m.rsplit('/', 1)[-1]: _decode_text(read_member(str(source), m),
                                             f'{source}:{m}')
          for m in members}


def _decode_text(data: bytes, where: str) -> str:
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError:
    # Some copies of the split files were re-saved in a Windows code page.
    try:
      return data.decode('cp1252')
    except UnicodeDecodeError as e:
      raise DatasetError(f'{where} is not a text file ({e}).') from e


def is_video_name(name: str) -> bool:
  return name.lower().endswith(VIDEO_SUFFIXES)


def video_key(path: str) -> str:
  """"<folder>/<stem>" of a video path, lowercased: the name it is listed by.

  Only the last folder counts, so any top-level folder of an archive
  (UCF-101/, hmdb51_org/) or of an unpacked copy does not matter.
  """
  parts = path.replace('\\', '/').split('/')
  stem = parts[-1].rsplit('.', 1)[0]
  return '/'.join(parts[-2:-1] + [stem]).lower()


def index_videos(source: pathlib.Path, scratch_dir: pathlib.Path
                 ) -> dict[str, VideoRef]:
  """{video_key: VideoRef} of the videos in an archive or folder.

  RAR archives inside (HMDB-51's per-class RARs) are searched too; those
  inside an archive are first unpacked to `scratch_dir`, where a later build
  reuses them.
  """
  refs = {}
  if source.is_dir():
    for path in sorted(source.rglob('*')):
      if is_video_name(path.name):
        refs[video_key(str(path))] = VideoRef(str(path))
      elif path.suffix.lower() == '.rar':
        refs.update(index_videos(path, scratch_dir))
    return refs
  for member in list_members(str(source)):
    if is_video_name(member):
      refs[video_key(member)] = VideoRef(str(source), member)
    elif member.lower().endswith('.rar'):
      inner = scratch_dir / source.name / member
      extract_member(str(source), member, inner)
      refs.update(index_videos(inner, scratch_dir))
  return refs
