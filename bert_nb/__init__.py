__version__ = "0.0.1"
"""bert_nb: pytorch-pretrained-bert's public names, one import line away (`from bert_nb import BertModel, ...`)."""
from .tokenization import BasicTokenizer, BertTokenizer, WordpieceTokenizer, load_vocab, whitespace_tokenize
from .hub import PRETRAINED_MODEL_NAMES, cached_path, minilm_dir
from .file_utils import CONFIG_NAME, PYTORCH_PRETRAINED_BERT_CACHE, WEIGHTS_NAME
from .config import BertConfig
from .modeling import (BertModel, BertPreTrainedModel, BertLayerNorm, BertEmbeddings, BertEncoder, BertLayer,
                       BertPooler, gelu)
from .heads import (BertForPreTraining, BertForMaskedLM, BertForNextSentencePrediction, BertForSequenceClassification,
                    BertForMultipleChoice, BertForTokenClassification, BertForQuestionAnswering)
from .optimization import (BertAdam, SCHEDULES, ConstantLR, WarmupConstantSchedule, WarmupLinearSchedule,
                           WarmupCosineSchedule, WarmupCosineWithHardRestartsSchedule, get_scheduler, no_decay_groups,
                           schedule_lambda)
from .trainer import Trainer, TrainingArgs, add_training_arguments, setup_device, set_seed, plot_metrics
from .convert import convert_tf_checkpoint_to_pytorch, load_tf_weights_in_bert
from .optimization import Lamb
from .pretraining_data import create_pretraining_data, create_training_instances, PretrainingDataset
from .vocab import train_wordpiece_vocab
from .pretraining import PreTrainingObjective, run_pretraining, predict_masked
