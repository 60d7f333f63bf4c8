// Read a DICOM SEG with @cornerstonejs/adapters, the parser OHIF 3.13.2 uses, in Node.
//
//   node tests/e2e/seg_parse.mjs SEG.dcm PHOTO.dcm [OUT.json]
//
// The photograph is registered with Cornerstone's metadata registry the way OHIF sees a
// photograph without plane geometry (Cornerstone's defaults: identity orientation, origin
// 0, spacing 1 or the Pixel Spacing), then the SEG buffer goes through
// adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer, which runs the same
// geometry checks (orientation, source-image lookup, rows/columns) as OHIF's loader.
// Prints (or writes) JSON: {ok, error, segments: [{index, label, pixels, bbox}], overlapping}.
// Pixel counts come from the labelmaps the adapter built, so the caller can compare them
// with the masks it wrote. Exit status 0 if parsed, 1 if the adapter rejected the SEG.
import fs from 'node:fs';

import dcmjs from 'dcmjs';
import { metaData } from '@cornerstonejs/core';
import { adaptersSEG } from '@cornerstonejs/adapters';

const [segPath, photoPath, outPath] = process.argv.slice(2);
if (!segPath || !photoPath) {
  console.error('usage: node seg_parse.mjs SEG.dcm PHOTO.dcm [OUT.json]');
  process.exit(2);
}

function readNaturalized(path) {
  const buffer = fs.readFileSync(path);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const dicomData = dcmjs.data.DicomMessage.readFile(arrayBuffer);
  const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);
  dataset._meta = dcmjs.data.DicomMetaDictionary.namifyDataset(dicomData.meta);
  return { arrayBuffer, dataset };
}

const photo = readNaturalized(photoPath).dataset;
const photoImageId = `dermpacs:${photo.SOPInstanceUID}`;
const spacing = photo.PixelSpacing ? photo.PixelSpacing.map(Number) : [1, 1];
const modules = {
  instance: photo,
  generalImageModule: { sopInstanceUID: photo.SOPInstanceUID, instanceNumber: photo.InstanceNumber },
  generalSeriesModule: {
    seriesInstanceUID: photo.SeriesInstanceUID,
    studyInstanceUID: photo.StudyInstanceUID,
    modality: photo.Modality,
  },
  imagePlaneModule: {
    rows: photo.Rows,
    columns: photo.Columns,
    frameOfReferenceUID: photo.FrameOfReferenceUID,
    rowCosines: [1, 0, 0],
    columnCosines: [0, 1, 0],
    imageOrientationPatient: [1, 0, 0, 0, 1, 0],
    imagePositionPatient: [0, 0, 0],
    pixelSpacing: spacing,
    rowPixelSpacing: spacing[0],
    columnPixelSpacing: spacing[1],
    usingDefaultValues: !photo.PixelSpacing,
  },
  imagePixelModule: {
    samplesPerPixel: photo.SamplesPerPixel,
    photometricInterpretation: photo.PhotometricInterpretation,
    rows: photo.Rows,
    columns: photo.Columns,
    bitsAllocated: photo.BitsAllocated,
    bitsStored: photo.BitsStored,
    highBit: photo.HighBit,
    pixelRepresentation: photo.PixelRepresentation,
  },
};
metaData.addProvider((type, imageId) => (imageId === photoImageId ? modules[type] : undefined), 10000);

const result = { ok: false, error: null, segments: [], overlapping: null };
try {
  const seg = readNaturalized(segPath);
  const parsed = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
    [photoImageId], seg.arrayBuffer, { metadataProvider: metaData, tolerance: 1e-3 },
  );
  result.overlapping = Boolean(parsed.overlappingSegments);
  const labels = {};
  (parsed.segMetadata?.data || []).forEach((d, i) => {
    if (d) labels[i] = d.SegmentLabel;
  });
  // One labelmap group per layer (overlapping segments are split over layers).
  const counts = new Map();
  for (const group of parsed.labelMapImages) {
    for (const image of group) {
      const pixels = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
      const columns = photo.Columns;
      for (let k = 0; k < pixels.length; k++) {
        const s = pixels[k];
        if (!s) continue;
        let c = counts.get(s);
        if (!c) {
          c = { pixels: 0, x0: Infinity, y0: Infinity, x1: -1, y1: -1 };
          counts.set(s, c);
        }
        const x = k % columns;
        const y = (k - x) / columns;
        c.pixels += 1;
        if (x < c.x0) c.x0 = x;
        if (y < c.y0) c.y0 = y;
        if (x > c.x1) c.x1 = x;
        if (y > c.y1) c.y1 = y;
      }
    }
  }
  result.segments = [...counts.entries()].sort((a, b) => a[0] - b[0]).map(([index, c]) => ({
    index,
    label: labels[index] ?? null,
    pixels: c.pixels,
    bbox: [c.x0, c.y0, c.x1 + 1, c.y1 + 1],
  }));
  for (const [index, label] of Object.entries(labels)) {
    if (!counts.has(Number(index))) result.segments.push({ index: Number(index), label, pixels: 0, bbox: null });
  }
  result.ok = true;
} catch (error) {
  result.error = String(error?.stack || error);
}
const text = JSON.stringify(result, null, 1);
if (outPath) fs.writeFileSync(outPath, text);
else console.log(text);
process.exit(result.ok ? 0 : 1);
