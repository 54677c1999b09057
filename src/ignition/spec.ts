/**
 * The shape of an Ignition 3.3–3.5 config (https://coreos.github.io/ignition/configuration-v3_5/),
 * as data: one table drives the type check of Ignition JSON templates and the key translation of
 * Butane (whose keys are the same names in snake_case).
 */
export type FieldSpec = 'string' | 'integer' | 'boolean' | { object: ObjectSpec } | { array: FieldSpec };

export interface ObjectSpec {
  /** Names the object for the Butane translator's per-object handling (inline/local sources, trees, …). */
  kind: ObjectKind;
  fields: Record<string, FieldSpec>;
  /** Keys first accepted by a later spec version than 3.3.0. */
  since?: Record<string, SpecVersion>;
}

export type ObjectKind =
  | 'root'
  | 'resource'
  | 'unit'
  | 'dropin'
  | 'user'
  | 'storage'
  | 'filesystem'
  | 'other';

export const SPEC_VERSIONS = ['3.3.0', '3.4.0', '3.5.0'] as const;
export type SpecVersion = (typeof SPEC_VERSIONS)[number];

const object = (
  fields: Record<string, FieldSpec>,
  kind: ObjectKind = 'other',
  since?: ObjectSpec['since'],
) => ({
  object: since ? { kind, fields, since } : { kind, fields },
});
const array = (items: FieldSpec): FieldSpec => ({ array: items });
const strings = array('string');

const resource = object(
  {
    source: 'string',
    compression: 'string',
    httpHeaders: array(object({ name: 'string', value: 'string' })),
    verification: object({ hash: 'string' }),
  },
  'resource',
);
const owner = object({ id: 'integer', name: 'string' });

const storage = object(
  {
    disks: array(
      object({
        device: 'string',
        wipeTable: 'boolean',
        partitions: array(
          object({
            label: 'string',
            number: 'integer',
            sizeMiB: 'integer',
            startMiB: 'integer',
            typeGuid: 'string',
            guid: 'string',
            wipePartitionEntry: 'boolean',
            shouldExist: 'boolean',
            resize: 'boolean',
          }),
        ),
      }),
    ),
    raid: array(
      object({ name: 'string', level: 'string', devices: strings, spares: 'integer', options: strings }),
    ),
    filesystems: array(
      object(
        {
          device: 'string',
          format: 'string',
          path: 'string',
          wipeFilesystem: 'boolean',
          label: 'string',
          uuid: 'string',
          options: strings,
          mountOptions: strings,
        },
        'filesystem',
      ),
    ),
    files: array(
      object({
        path: 'string',
        overwrite: 'boolean',
        contents: resource,
        append: array(resource),
        mode: 'integer',
        user: owner,
        group: owner,
      }),
    ),
    directories: array(
      object({ path: 'string', overwrite: 'boolean', mode: 'integer', user: owner, group: owner }),
    ),
    links: array(
      object({
        path: 'string',
        target: 'string',
        hard: 'boolean',
        overwrite: 'boolean',
        user: owner,
        group: owner,
      }),
    ),
    luks: array(
      object(
        {
          name: 'string',
          device: 'string',
          keyFile: resource,
          label: 'string',
          uuid: 'string',
          options: strings,
          discard: 'boolean',
          openOptions: strings,
          wipeVolume: 'boolean',
          clevis: object({
            tang: array(
              object({ url: 'string', thumbprint: 'string', advertisement: 'string' }, 'other', {
                advertisement: '3.4.0',
              }),
            ),
            tpm2: 'boolean',
            threshold: 'integer',
            custom: object({ pin: 'string', config: 'string', needsNetwork: 'boolean' }),
          }),
          cex: object({ enabled: 'boolean' }),
        },
        'other',
        { discard: '3.4.0', openOptions: '3.4.0', cex: '3.5.0' },
      ),
    ),
  },
  'storage',
);

export const IGNITION_SPEC: ObjectSpec = {
  kind: 'root',
  fields: {
    ignition: object({
      version: 'string',
      config: object({ merge: array(resource), replace: resource }),
      timeouts: object({ httpResponseHeaders: 'integer', httpTotal: 'integer' }),
      security: object({ tls: object({ certificateAuthorities: array(resource) }) }),
      proxy: object({ httpProxy: 'string', httpsProxy: 'string', noProxy: strings }),
    }),
    storage,
    systemd: object({
      units: array(
        object(
          {
            name: 'string',
            enabled: 'boolean',
            mask: 'boolean',
            contents: 'string',
            dropins: array(object({ name: 'string', contents: 'string' }, 'dropin')),
          },
          'unit',
        ),
      ),
    }),
    passwd: object({
      users: array(
        object(
          {
            name: 'string',
            passwordHash: 'string',
            sshAuthorizedKeys: strings,
            uid: 'integer',
            gecos: 'string',
            homeDir: 'string',
            noCreateHome: 'boolean',
            primaryGroup: 'string',
            groups: strings,
            noUserGroup: 'boolean',
            noLogInit: 'boolean',
            shell: 'string',
            shouldExist: 'boolean',
            system: 'boolean',
          },
          'user',
        ),
      ),
      groups: array(
        object({
          name: 'string',
          gid: 'integer',
          passwordHash: 'string',
          shouldExist: 'boolean',
          system: 'boolean',
        }),
      ),
    }),
    kernelArguments: object({ shouldExist: strings, shouldNotExist: strings }),
  },
};

/**
 * Butane's `storage.trees` entry, which Ignition has no field for: checked like the Ignition objects so
 * a misspelt `path` is an error rather than a tree silently installed at `/`.
 */
export const BUTANE_TREE: FieldSpec = object({ local: 'string', path: 'string' });

export type ScalarType = 'string' | 'integer' | 'boolean';

/**
 * The scalar type a key takes wherever it appears, under Ignition's and Butane's spelling (`KEY[]` for
 * the items of a list), for reading YAML as go-yaml reads it into Butane's structs and for
 * placeholders in integer and boolean fields. A name with two scalar types is left out.
 */
export const SCALAR_TYPE_OF_KEY: ReadonlyMap<string, ScalarType> = (() => {
  const types = new Map<string, ScalarType | 'ambiguous'>();
  const note = (key: string, type: ScalarType) => {
    const known = types.get(key);
    types.set(key, known === undefined || known === type ? type : 'ambiguous');
  };
  const walk = (key: string, spec: FieldSpec) => {
    if (typeof spec === 'string') for (const spelling of new Set([key, snakeCase(key)])) note(spelling, spec);
    else if ('array' in spec) walk(`${key}[]`, spec.array);
    else for (const [field, fieldSpec] of Object.entries(spec.object.fields)) walk(field, fieldSpec);
  };
  walk('', { object: IGNITION_SPEC });
  walk('', BUTANE_TREE);
  // Butane's own keys (butane.ts EXTRA_KEYS).
  for (const key of ['inline', 'local', 'contents_local', 'ssh_authorized_keys_local[]']) note(key, 'string');
  note('with_mount_unit', 'boolean');
  return new Map([...types].filter((entry): entry is [string, ScalarType] => entry[1] !== 'ambiguous'));
})();

/** Butane's snake_case name of an Ignition key (`sizeMiB` → `size_mib`, `sshAuthorizedKeys` → `ssh_authorized_keys`). */
export function snakeCase(key: string): string {
  return key.replace(/MiB$/, 'Mib').replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

export function isAtLeast(version: SpecVersion, required: SpecVersion): boolean {
  return SPEC_VERSIONS.indexOf(version) >= SPEC_VERSIONS.indexOf(required);
}
