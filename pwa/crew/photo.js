// Photos are resized on the phone before they are kept: a 12-megapixel picture becomes a
// JPEG of at most MAX_SIDE pixels a side (a few hundred KB), which uploads on one bar of
// signal and stays under the server's limit. Drawing on a canvas also drops the EXIF block
// (the phone's GPS position and serial number never leave it).

export const MAX_SIDE = 1600;
const QUALITY = 0.8;

async function decode(file) {
  if (typeof createImageBitmap === "function") {
    try {
      return await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch {
      // fall back to an <img> (older engines, some formats)
    }
  }
  const url = URL.createObjectURL(file);
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    return image;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** A resized JPEG Blob of `file`. */
export async function resizePhoto(file, maxSide = MAX_SIDE) {
  const image = await decode(file);
  const width = image.width || image.naturalWidth;
  const height = image.height || image.naturalHeight;
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
  image.close?.();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", QUALITY));
  if (!blob) throw new Error("the photo could not be encoded");
  return blob;
}
