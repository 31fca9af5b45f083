/** Public API of the simulator's datasets: loaders, the IDX format, slicing, seeded shuffles. */

export {
  idxFileCandidates,
  loadIdxDirectory,
  parseIdx,
  readIdxFile,
  type IdxData,
  type IdxDtype,
  type IdxTensor,
} from "./idx.js";
export { loadMnistDigits, MNIST_DIGITS_SEED, MNIST_DIGITS_TRAIN_SIZE } from "./mnist-digits.js";
export {
  DATASET_SPEC_FORMS,
  DEFAULT_FASHION_MNIST_DIR,
  fashionMnistDirectory,
  loadDataset,
} from "./registry.js";
export { parseNumericCsv, type CsvSeparator, type NumericTable } from "./csv.js";
export {
  CSV_SPLIT_SEED,
  loadCsvDataset,
  parseCsvSpec,
  readCsvDataset,
  type CsvSpec,
} from "./csv-dataset.js";
export { assertSplit, DATASET_SPLITS, type DatasetSplit } from "./split.js";
export { shardDataset, subsetDataset, takeExamples } from "./subset.js";
