PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
INSERT INTO tenants VALUES(1,'acme','2026-12-06T02:30:30Z');
CREATE TABLE tokens (hash TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
  role TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL);
INSERT INTO tokens VALUES('6f54fef7f78de96b7303b1508dc6dfabb6b590f7f4f978d925a7041e90902bd0',1,'admin','admin','2026-12-06T02:30:30Z');
CREATE TABLE products (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
  name TEXT NOT NULL, description TEXT, created_at TEXT NOT NULL, UNIQUE (tenant_id, name));
INSERT INTO products VALUES('prd_legacy',1,'Thermo','from before migrations','2026-01-01T00:00:00Z');
CREATE TABLE device_groups (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  product_id TEXT NOT NULL REFERENCES products(id), name TEXT NOT NULL, description TEXT,
  created_at TEXT NOT NULL, UNIQUE (product_id, name));
INSERT INTO device_groups VALUES('grp_legacy',1,'prd_legacy','Field Test','','2026-01-01T00:00:00Z');
CREATE TABLE devices (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  product_id TEXT NOT NULL REFERENCES products(id), group_id TEXT REFERENCES device_groups(id),
  state TEXT NOT NULL, version TEXT, public_key TEXT NOT NULL, certificate TEXT,
  claimed INTEGER NOT NULL DEFAULT 0, claimed_at TEXT, last_seen TEXT, imported_at TEXT NOT NULL);
CREATE TABLE claim_challenges (nonce TEXT PRIMARY KEY, device_id TEXT NOT NULL,
  tenant_id INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE images (tenant_id INTEGER NOT NULL, sha256 TEXT NOT NULL, name TEXT,
  size INTEGER NOT NULL, received INTEGER NOT NULL DEFAULT 0, complete INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, manifest TEXT, PRIMARY KEY (tenant_id, sha256));
CREATE TABLE deployments (id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  group_id TEXT NOT NULL REFERENCES device_groups(id), images TEXT NOT NULL, rollout INTEGER NOT NULL,
  state TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, manifest TEXT, sequence INTEGER, waves TEXT, wave INTEGER, wave_started_at INTEGER, step_after INTEGER, halt_on_failure REAL, halt_reason TEXT, failure_baseline INTEGER, previous TEXT);
CREATE TABLE factory_cas (tenant_id INTEGER NOT NULL, id TEXT NOT NULL, subject TEXT NOT NULL,
  pem TEXT NOT NULL, created_at TEXT NOT NULL, stations INTEGER NOT NULL DEFAULT 0, key_sha256 TEXT, PRIMARY KEY (tenant_id, id));
CREATE TABLE deployment_devices (deployment_id TEXT NOT NULL, device_id TEXT NOT NULL,
  status TEXT NOT NULL, detail TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (deployment_id, device_id));
CREATE TABLE import_parts (tenant_id INTEGER NOT NULL, import_id TEXT NOT NULL, offset INTEGER NOT NULL,
  body BLOB NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (tenant_id, import_id, offset));
CREATE TABLE idempotency (tenant_id INTEGER NOT NULL, key TEXT NOT NULL, method TEXT NOT NULL,
  path TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL, request_sha256 TEXT, secret INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, key));
CREATE TABLE factory_ca_owners (key_sha256 TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE factory_ca_challenges (nonce TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL,
  key_sha256 TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX devices_by_tenant ON devices (tenant_id, id);
CREATE INDEX devices_by_version ON devices (tenant_id, version);
CREATE INDEX devices_by_group ON devices (tenant_id, group_id);
CREATE INDEX deployments_by_group ON deployments (group_id);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
COMMIT;
