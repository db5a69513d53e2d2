"""TFDS builder `hmdb51_frames`: HMDB-51 from the archives as published."""

from pasnet_jax.data import frames_builder
from pasnet_jax.data import splits


class Hmdb51Frames(frames_builder.VideoFramesBuilder):
  """HMDB-51: 6,766 videos of 51 actions, as JPEG frames (short side 256).

  Configs split1..split3 are the official 70/30 splits (3,570 train and
  1,530 test videos each; videos marked 0 are in neither). Labels follow the
  alphabetical class order; `name` is "<class>/<video stem>".
  """
  name = 'hmdb51_frames'
  CLASS_NAMES = splits.HMDB51_CLASSES
  VIDEO_SOURCES = ('hmdb51_org.rar', 'hmdb51_org')
  SPLIT_SOURCES = ('test_train_splits.rar', 'testTrainMulti_7030_splits')
  HOMEPAGE = ('https://serre-lab.clps.brown.edu/resource/'
              'hmdb-a-large-human-motion-database/')
  CITATION = """@inproceedings{kuehne2011hmdb,
  title={{HMDB}: a large video database for human motion recognition},
  author={Kuehne, Hildegard and Jhuang, Hueihan and Garrote, Est{\\'\\i}baliz
          and Poggio, Tomaso and Serre, Thomas},
  booktitle={ICCV},
  year={2011}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download from
  https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/
  and put in the manual directory, as published:
    hmdb51_org.rar          (a RAR of 51 per-class RARs; or a folder
                             hmdb51_org/ holding those RARs or their
                             unpacked class folders)
    test_train_splits.rar   (or its folder testTrainMulti_7030_splits/)
  The per-class RARs are unpacked once to <download_dir>/unpacked (about
  2 GB), which later builds reuse; delete it after building all configs.
  """

  def _listed_videos(self, files, source):
    return splits.hmdb51_split(files, self.builder_config.split_number, source)
