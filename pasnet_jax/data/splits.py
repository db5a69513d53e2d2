"""The official train/test split files of UCF-101 and HMDB-51, as published.

UCF-101 (UCF101TrainTestSplits-RecognitionTask.zip, folder ucfTrainTestlist):
  classInd.txt      "<1-based index> <ClassName>" per line
  trainlist0N.txt   "<Class>/<video>.avi <1-based index>" per line
  testlist0N.txt    "<Class>/<video>.avi" per line
The lines end in CRLF. The folder name is the class; the file names of one
class are spelled differently (HandstandPushups/v_HandStandPushups_g01_c01.avi),
so the class is never read off a file name.

HMDB-51 (test_train_splits.rar, folder testTrainMulti_7030_splits):
  <class>_test_split<N>.txt   "<video>.avi <code>" per line, where
  1 = train, 2 = test, 0 = in neither.

Videos are named "<Class>/<video stem>" (e.g.
"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"), the `name` feature of the datasets.
"""

from typing import NamedTuple

from pasnet_jax.errors import DatasetError

# classInd.txt order. The label of a video is its index here.
UCF101_CLASSES = (
    'ApplyEyeMakeup', 'ApplyLipstick', 'Archery', 'BabyCrawling',
    'BalanceBeam', 'BandMarching', 'BaseballPitch', 'Basketball',
    'BasketballDunk', 'BenchPress', 'Biking', 'Billiards', 'BlowDryHair',
    'BlowingCandles', 'BodyWeightSquats', 'Bowling', 'BoxingPunchingBag',
    'BoxingSpeedBag', 'BreastStroke', 'BrushingTeeth', 'CleanAndJerk',
    'CliffDiving', 'CricketBowling', 'CricketShot', 'CuttingInKitchen',
    'Diving', 'Drumming', 'Fencing', 'FieldHockeyPenalty', 'FloorGymnastics',
    'FrisbeeCatch', 'FrontCrawl', 'GolfSwing', 'Haircut', 'Hammering',
    'HammerThrow', 'HandstandPushups', 'HandstandWalking', 'HeadMassage',
    'HighJump', 'HorseRace', 'HorseRiding', 'HulaHoop', 'IceDancing',
    'JavelinThrow', 'JugglingBalls', 'JumpingJack', 'JumpRope', 'Kayaking',
    'Knitting', 'LongJump', 'Lunges', 'MilitaryParade', 'Mixing',
    'MoppingFloor', 'Nunchucks', 'ParallelBars', 'PizzaTossing',
    'PlayingCello', 'PlayingDaf', 'PlayingDhol', 'PlayingFlute',
    'PlayingGuitar', 'PlayingPiano', 'PlayingSitar', 'PlayingTabla',
    'PlayingViolin', 'PoleVault', 'PommelHorse', 'PullUps', 'Punch', 'PushUps',
    'Rafting', 'RockClimbingIndoor', 'RopeClimbing', 'Rowing', 'SalsaSpin',
    'ShavingBeard', 'Shotput', 'SkateBoarding', 'Skiing', 'Skijet',
    'SkyDiving', 'SoccerJuggling', 'SoccerPenalty', 'StillRings',
    'SumoWrestling', 'Surfing', 'Swing', 'TableTennisShot', 'TaiChi',
    'TennisSwing', 'ThrowDiscus', 'TrampolineJumping', 'Typing', 'UnevenBars',
    'VolleyballSpiking', 'WalkingWithDog', 'WallPushups', 'WritingOnBoard',
    'YoYo')

# The split files' class names, in the alphabetical order used by TSN and ECO.
HMDB51_CLASSES = (
    'brush_hair', 'cartwheel', 'catch', 'chew', 'clap', 'climb',
    'climb_stairs', 'dive', 'draw_sword', 'dribble', 'drink', 'eat',
    'fall_floor', 'fencing', 'flic_flac', 'golf', 'handstand', 'hit', 'hug',
    'jump', 'kick', 'kick_ball', 'kiss', 'laugh', 'pick', 'pour', 'pullup',
    'punch', 'push', 'pushup', 'ride_bike', 'ride_horse', 'run', 'shake_hands',
    'shoot_ball', 'shoot_bow', 'shoot_gun', 'sit', 'situp', 'smile', 'smoke',
    'somersault', 'stand', 'swing_baseball', 'sword', 'sword_exercise', 'talk',
    'throw', 'turn', 'walk', 'wave')

# (train, test) videos listed by the official split files.
UCF101_SPLIT_SIZES = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}
HMDB51_SPLIT_SIZES = {1: (3570, 1530), 2: (3570, 1530), 3: (3570, 1530)}

SPLIT_NUMBERS = (1, 2, 3)


class ListedVideo(NamedTuple):
  name: str   # "<Class>/<video stem>"
  label: int  # 0-based index into the class tuple


def _lines(text: str):
  """(line number, whitespace-separated fields) of the non-blank lines."""
  for number, line in enumerate(text.splitlines(), start=1):
    fields = line.split()
    if fields:
      yield number, fields


def _stem(file_name: str) -> str:
  return file_name.rsplit('.', 1)[0] if '.' in file_name else file_name


def parse_ucf101_class_index(text: str, file_name: str = 'classInd.txt'
                             ) -> tuple[str, ...]:
  """Class names from classInd.txt, checked to be the official 101 in order."""
  names = []
  for number, fields in _lines(text):
    if len(fields) != 2 or not fields[0].isdigit():
      raise DatasetError(f'{file_name} line {number}: expected "<index> '
                         f'<ClassName>", got {" ".join(fields)!r}.')
    if int(fields[0]) != len(names) + 1:
      raise DatasetError(f'{file_name} line {number}: index {fields[0]} out '
                         f'of order (expected {len(names) + 1}).')
    names.append(fields[1])
  if tuple(names) != UCF101_CLASSES:
    raise DatasetError(
        f'{file_name} does not list the 101 official UCF-101 classes in the '
        'official order; use the file from '
        'UCF101TrainTestSplits-RecognitionTask.zip.')
  return tuple(names)


def parse_ucf101_list(text: str, file_name: str,
                      classes: tuple[str, ...] = UCF101_CLASSES
                      ) -> list[ListedVideo]:
  """Videos of trainlist0N.txt (with a label column) or testlist0N.txt.

  The label comes from the folder part of the path. Where the train list
  also gives a 1-based index, it must agree.
  """
  index = {name: i for i, name in enumerate(classes)}
  videos = []
  for number, fields in _lines(text):
    path = fields[0].replace('\\', '/')
    folder, _, file = path.rpartition('/')
    if not folder or folder not in index or len(fields) > 2:
      raise DatasetError(
          f'{file_name} line {number}: expected "<Class>/<video>.avi" with an '
          f'official class name, got {" ".join(fields)!r}.')
    label = index[folder]
    if len(fields) == 2 and fields[1] != str(label + 1):
      raise DatasetError(
          f'{file_name} line {number}: label {fields[1]} does not match class '
          f'{folder} (index {label + 1} in classInd.txt).')
    videos.append(ListedVideo(f'{folder}/{_stem(file)}', label))
  return videos


def ucf101_split(files: dict[str, str], split_number: int, source: str
                 ) -> dict[str, list[ListedVideo]]:
  """{'train': [...], 'test': [...]} from the text of ucfTrainTestlist.

  `files` maps base names to text; `source` (the archive or folder they came
  from) is named in errors.
  """
  classes = parse_ucf101_class_index(_get(files, 'classInd.txt', source))
  result = {}
  for split, prefix in (('train', 'trainlist'), ('test', 'testlist')):
    name = f'{prefix}{split_number:02d}.txt'
    result[split] = parse_ucf101_list(_get(files, name, source), name, classes)
  return result


def parse_hmdb51_split_file(text: str, file_name: str, label: int
                            ) -> dict[str, list[ListedVideo]]:
  """{'train': [...], 'test': [...]} of one <class>_test_split<N>.txt."""
  class_name = HMDB51_CLASSES[label]
  result = {'train': [], 'test': []}
  for number, fields in _lines(text):
    if len(fields) != 2 or fields[1] not in ('0', '1', '2'):
      raise DatasetError(
          f'{file_name} line {number}: expected "<video>.avi <0|1|2>", got '
          f'{" ".join(fields)!r}.')
    if fields[1] != '0':
      split = 'train' if fields[1] == '1' else 'test'
      result[split].append(
          ListedVideo(f'{class_name}/{_stem(fields[0])}', label))
  return result


def hmdb51_split(files: dict[str, str], split_number: int, source: str
                 ) -> dict[str, list[ListedVideo]]:
  """{'train': [...], 'test': [...]} from the text of the 51 split files.

  `files` maps base names to text; `source` (the archive or folder they came
  from) is named in errors.
  """
  result = {'train': [], 'test': []}
  for label, class_name in enumerate(HMDB51_CLASSES):
    name = f'{class_name}_test_split{split_number}.txt'
    per_class = parse_hmdb51_split_file(_get(files, name, source), name, label)
    for split in result:
      result[split].extend(per_class[split])
  return result


def _get(files: dict[str, str], name: str, source: str) -> str:
  # Case-insensitive: copies unpacked on Windows do not keep case reliably.
  by_lower_name = {k.lower(): v for k, v in files.items()}
  if name.lower() not in by_lower_name:
    raise DatasetError(f'Split file {name} is missing from {source}. Use the '
                       'split archive as published.')
  return by_lower_name[name.lower()]
