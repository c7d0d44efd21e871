// Test helper for Azurite (the Azure Storage emulator), run by tests/cli.rs under `.ci/run`:
//   node scripts/azurite.cjs upload CONTAINER DIR   create CONTAINER, upload DIR's files
//                                                   under their paths relative to DIR
//   node scripts/azurite.cjs delete CONTAINER NAME  delete one blob
//   node scripts/azurite.cjs put CONTAINER NAME FILE
//   node scripts/azurite.cjs sas CONTAINER PERMS    print a container SAS token (e.g. "r",
//                                                   "rl") valid for an hour
// object_store cannot create containers; the official SDK (@azure/storage-blob, installed
// by .ci/run beside azurite, found through NODE_PATH) signs the requests.
const {
  BlobServiceClient,
  StorageSharedKeyCredential,
  generateBlobSASQueryParameters,
  ContainerSASPermissions,
} = require("@azure/storage-blob");
const fs = require("fs");
const path = require("path");

const url = (process.env.AZURITE_BLOB_STORAGE_URL || "http://127.0.0.1:10000").replace(/\/$/, "");
const account = "devstoreaccount1";
const key =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const cred = new StorageSharedKeyCredential(account, key);
const service = new BlobServiceClient(`${url}/${account}`, cred);

function files(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

async function main() {
  const [cmd, container, a, b] = process.argv.slice(2);
  const c = service.getContainerClient(container);
  if (cmd === "upload") {
    await c.createIfNotExists();
    for (const f of files(a)) {
      const name = path.relative(a, f).split(path.sep).join("/");
      await c.getBlockBlobClient(name).uploadFile(f);
    }
  } else if (cmd === "put") {
    await c.createIfNotExists();
    await c.getBlockBlobClient(a).uploadFile(b);
  } else if (cmd === "sas") {
    const sas = generateBlobSASQueryParameters(
      {
        containerName: container,
        permissions: ContainerSASPermissions.parse(a),
        startsOn: new Date(Date.now() - 5 * 60 * 1000),
        expiresOn: new Date(Date.now() + 60 * 60 * 1000),
      },
      cred,
    );
    process.stdout.write(sas.toString());
  } else if (cmd === "delete") {
    await c.getBlockBlobClient(a).delete();
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
}

main().catch((e) => {
  console.error(e.message || e);
  process.exit(1);
});
