// Runs an ONNX model in ONNX Runtime (onnxruntime-node, CPU) on float32 inputs from an
// .npy file and writes the outputs as .npy: the runtime's view of model_quantized.onnx
// for the Python checks (check_quantized_model.py).
//
// Usage: node run_onnx.js MODEL.onnx INPUTS.npy OUTPUTS.npy
// Finds onnxruntime-node in $OMPQ_ONNXRUNTIME_NODE (a node_modules folder), as
// scripts/test.sh installs it.
'use strict';
const fs = require('fs');
const path = require('path');

function readNpy(file) {
  const bytes = fs.readFileSync(file);
  if (bytes.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not .npy`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = bytes.toString('latin1', start, start + headerLength);
  if (!header.includes("'descr': '<f4'") || header.includes("'fortran_order': True")) {
    throw new Error(`${file}: want little-endian float32 in C order, got ${header}`);
  }
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',')
      .map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  const offset = start + headerLength;
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + offset,
                                                   bytes.byteOffset + bytes.length));
  return {shape, data};
}

function writeNpy(file, shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${
      shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  Buffer.from('\x93NUMPY', 'latin1').copy(prefix, 0);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([prefix, Buffer.from(header, 'latin1'),
                                        Buffer.from(data.buffer, data.byteOffset,
                                                    data.byteLength)]));
}

async function main() {
  const [modelPath, inputPath, outputPath] = process.argv.slice(2);
  if (!outputPath) throw new Error('usage: run_onnx.js MODEL.onnx INPUTS.npy OUTPUTS.npy');
  const modules = process.env.OMPQ_ONNXRUNTIME_NODE;
  if (!modules) throw new Error('OMPQ_ONNXRUNTIME_NODE (the node_modules folder) is not set');
  const ort = require(path.join(modules, 'onnxruntime-node'));
  // OMPQ_ONNXRUNTIME_OPTIMIZATION: ONNX Runtime's graph optimization level (default "all").
  const level = process.env.OMPQ_ONNXRUNTIME_OPTIMIZATION || 'all';
  const session = await ort.InferenceSession.create(modelPath, {graphOptimizationLevel: level});
  const input = readNpy(inputPath);
  const sample = input.shape.slice(1).reduce((a, b) => a * b, 1);
  const batch = 128;
  const outputs = [];
  let outputShape = null;
  for (let i = 0; i < input.shape[0]; i += batch) {
    const n = Math.min(batch, input.shape[0] - i);
    const feed = new ort.Tensor('float32', input.data.subarray(i * sample, (i + n) * sample),
                                [n, ...input.shape.slice(1)]);
    const result = await session.run({[session.inputNames[0]]: feed});
    const out = result[session.outputNames[0]];
    outputShape = out.dims;
    outputs.push(Float32Array.from(out.data));
  }
  const total = outputs.reduce((a, o) => a + o.length, 0);
  const all = new Float32Array(total);
  let at = 0;
  for (const o of outputs) {
    all.set(o, at);
    at += o.length;
  }
  writeNpy(outputPath, [input.shape[0], ...outputShape.slice(1)], all);
  console.log(`onnxruntime-node ${ort.env.versions ? ort.env.versions.common : ''}: ` +
              `${input.shape[0]} samples, output [${outputShape.slice(1)}]`);
}

main().catch((e) => {
  console.error(`run_onnx.js: ${e.message}`);
  process.exit(1);
});
