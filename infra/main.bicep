// The gateway on Azure: `azd up` provisions this, then deploys the app (azure.yaml).
// One resource group; one user-assigned identity for everything; no keys anywhere but the
// admin API's, which lives in Key Vault. Every app setting it sets is one the gateway reads
// (shared/catalog.py) or one the Functions runtime reads; tests/test_infra.py checks both ways.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; with the subscription and location it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of the Function App (Flex Consumption), storage, Cosmos DB, Key Vault and monitoring.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@minLength(1)
@description('Region of the primary Azure OpenAI account (priority 1: takes all traffic while healthy).')
param openAiPrimaryLocation string

@minLength(1)
@description('Region of the secondary Azure OpenAI account (priority 2: used while the primary is throttled or failing).')
param openAiSecondaryLocation string

@description('Object id of the developer running azd (azd sets AZURE_PRINCIPAL_ID); empty for none.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal'])
param principalType string = 'User'

@description('Give the developer the app\'s data roles, for local runs and the admin CLI against the deployed resources.')
param grantUserRoles bool = true

@secure()
@description('Key of the admin API (header x-admin-key). azd generates it once per environment and keeps it in the environment\'s config.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      noSpecial: true
    }
  }
})
param gatewayAdminKey string

@description('Chat model deployed on both accounts.')
param chatModelName string = 'gpt-4o-mini'
param chatModelVersion string = '2024-07-18'
@allowed(['GlobalStandard', 'DataZoneStandard', 'Standard'])
param chatSkuName string = 'GlobalStandard'
@description('Chat capacity of each account, in thousands of tokens per minute.')
@minValue(1)
param chatCapacity int = 30
@description('Name callers use for the chat deployment (model in the openai SDK); the same name on both accounts.')
param chatDeploymentName string = chatModelName

@description('Embedding model deployed on both accounts; the semantic cache embeds prompts with it.')
param embeddingModelName string = 'text-embedding-3-small'
param embeddingModelVersion string = '1'
@allowed(['GlobalStandard', 'DataZoneStandard', 'Standard'])
param embeddingSkuName string = 'Standard'
@minValue(1)
param embeddingCapacity int = 30
param embeddingDeploymentName string = embeddingModelName
@description('Length of the embedding model\'s vectors; the Cosmos DB vector policy is built for it.')
param embeddingDimensions int = 1536

@description('Turn the semantic cache on (GATEWAY_CACHE). Cosmos DB is deployed either way: serverless costs nothing at rest.')
param cacheEnabled bool = true
@minValue(1)
param cacheTtlSeconds int = 3600
@allowed(['quantizedFlat', 'diskANN'])
param cacheVectorIndexType string = 'quantizedFlat'
@description('More GATEWAY_CACHE fields (see the README), merged over the ones built here; similar prompts are served only when proven the same question; {"semantic": false} keeps exact matches only, {"judge": "<deployment>"} asks a model about rewordings.')
param cacheSettings object = {}
param cosmosDatabaseName string = 'gateway'
param cosmosContainerName string = 'semcache'

@description('NCRONTAB schedule of the backend health probe. Every probe is four tiny model calls, so not every 30 s in Azure.')
param probeSchedule string = '0 */5 * * * *'

@description('Prices per 1,000 tokens by deployment (GATEWAY_PRICES); empty: list prices of the default models.')
param prices object = {}

@description('Deploy Azure AI Content Safety and turn the content-safety stage on (GATEWAY_CONTENT_SAFETY).')
param contentSafetyEnabled bool = false
@description('Region of the Content Safety account (Prompt Shields is offered in some regions only).')
param contentSafetyLocation string = location
@description('More GATEWAY_CONTENT_SAFETY fields (categories, deployments, subscriptions, on_unavailable; see the README), merged over the endpoint set here.')
param contentSafetySettings object = {}

@description('Deploy privately: a virtual network, Flex Consumption virtual network integration, and private endpoints with privatelink DNS zones for storage (blob, table), Cosmos DB, Azure OpenAI, Key Vault and Content Safety, whose public network access is then off.')
param privateNetworking bool = false
@description('With privateNetworking: callers still reach the gateway over the internet (true), or only from the virtual network, through the app\'s private endpoint (false).')
param publicGatewayAccess bool = true
@description('Address space of the virtual network (privateNetworking); the first two /24s are the app and endpoint subnets.')
param vnetAddressPrefix string = '10.40.0.0/16'
param appSubnetPrefix string = '10.40.0.0/24'
param endpointSubnetPrefix string = '10.40.1.0/24'

@description('Blob container of the audit log of prompts and completions (turned on per subscription by the admin API).')
param promptLogContainerName string = 'promptlog'
@description('Days an audit-log blob is kept before the storage lifecycle rule deletes it.')
@minValue(1)
param promptLogRetentionDays int = 90

@description('Most instances the app scales out to; with httpPerInstanceConcurrency, the most concurrent streams.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40
@description('Memory of each instance; Flex Consumption gives CPU in proportion.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@description('Concurrent HTTP requests per instance (see the README\'s capacity section). Python\'s default is 1.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 200

@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param storageSkuName string = 'Standard_LRS'

// Entra ID callers and admins (README, "Entra ID"): off while entraTenantId is empty.
@description('Directory (tenant) id whose tokens the gateway accepts. Empty: Entra ID off, keys only.')
param entraTenantId string = ''
@description('The gateway app registration\'s Application ID URI, e.g. api://aoai-gateway: the audience of v1 tokens.')
param gatewayAppIdUri string = ''
@description('The gateway app registration\'s client (application) id: the audience of v2 tokens.')
param gatewayAppClientId string = ''
@description('App role that may use the whole admin API.')
param entraAdminRole string = 'Gateway.Admin'
@description('App role that may use the admin API\'s read-only views.')
param entraReaderRole string = 'Gateway.Reader'
@description('Comma-separated app roles or scopes a calling app\'s token needs one of; empty: none.')
param entraRequiredRoles string = ''
@description('Sovereign clouds: the signing keys URL and the issuers (comma-separated); empty: the public cloud\'s.')
param entraJwksUrl string = ''
param entraIssuers string = ''
@description('false: the shared admin key is refused; only tokens with the admin or reader role reach the admin API.')
param adminKeyEnabled bool = true

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// Every service but the gateway itself goes private with privateNetworking; the gateway too without publicGatewayAccess.
var servicesPublicAccess = privateNetworking ? 'Disabled' : 'Enabled'
var servicesDefaultAction = privateNetworking ? 'Deny' : 'Allow'
var gatewayPublicAccess = (privateNetworking && !publicGatewayAccess) ? 'Disabled' : 'Enabled'
// The privatelink zones of the public cloud, one per kind of private endpoint.
var privateDnsZones = {
  blob: 'privatelink.blob.core.windows.net'
  table: 'privatelink.table.core.windows.net'
  cosmos: 'privatelink.documents.azure.com'
  openai: 'privatelink.openai.azure.com'
  vault: 'privatelink.vaultcore.azure.net'
  cognitive: 'privatelink.cognitiveservices.azure.com'
  sites: 'privatelink.azurewebsites.net'
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity './app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    skuName: storageSkuName
    publicNetworkAccess: servicesPublicAccess
    networkDefaultAction: servicesDefaultAction
    promptLogContainerName: promptLogContainerName
    promptLogRetentionDays: promptLogRetentionDays
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault './app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    adminKey: gatewayAdminKey
    publicNetworkAccess: servicesPublicAccess
    networkDefaultAction: servicesDefaultAction
  }
}

module cosmos './app/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    name: '${abbrs.documentDBDatabaseAccounts}${resourceToken}'
    location: location
    tags: tags
    databaseName: cosmosDatabaseName
    containerName: cosmosContainerName
    embeddingDimensions: embeddingDimensions
    vectorIndexType: cacheVectorIndexType
    defaultTtl: cacheTtlSeconds
    publicNetworkAccess: servicesPublicAccess
  }
}

var modelDeployments = [
  {
    name: chatDeploymentName
    model: chatModelName
    version: chatModelVersion
    sku: chatSkuName
    capacity: chatCapacity
  }
  {
    name: embeddingDeploymentName
    model: embeddingModelName
    version: embeddingModelVersion
    sku: embeddingSkuName
    capacity: embeddingCapacity
  }
]

module openAiPrimary './app/openai.bicep' = {
  name: 'openai-primary'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesOpenAI}${resourceToken}-1'
    location: openAiPrimaryLocation
    tags: tags
    deployments: modelDeployments
    publicNetworkAccess: servicesPublicAccess
  }
}

module openAiSecondary './app/openai.bicep' = {
  name: 'openai-secondary'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesOpenAI}${resourceToken}-2'
    location: openAiSecondaryLocation
    tags: tags
    deployments: modelDeployments
    publicNetworkAccess: servicesPublicAccess
  }
}

module contentSafety './app/contentsafety.bicep' = if (contentSafetyEnabled) {
  name: 'contentsafety'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesContentSafety}${resourceToken}'
    location: contentSafetyLocation
    tags: tags
    publicNetworkAccess: servicesPublicAccess
  }
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    cosmosAccountName: cosmos.outputs.name
    openAiPrimaryName: openAiPrimary.outputs.name
    openAiSecondaryName: openAiSecondary.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    contentSafetyName: contentSafetyEnabled ? contentSafety.outputs.name : ''
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    grantUserRoles: grantUserRoles
  }
}

// The pool (GATEWAY_BACKENDS): the same deployment names on both accounts, so a caller's
// `model` works on either; the secondary takes traffic only while the primary cannot.
var backendDeployments = {
  '${chatDeploymentName}': chatDeploymentName
  '${embeddingDeploymentName}': embeddingDeploymentName
}
var backends = [
  {
    name: 'primary-${openAiPrimaryLocation}'
    endpoint: openAiPrimary.outputs.endpoint
    region: openAiPrimaryLocation
    priority: 1
    weight: 1
    deployments: backendDeployments
    auth: {
      type: 'managed_identity'
    }
  }
  {
    name: 'secondary-${openAiSecondaryLocation}'
    endpoint: openAiSecondary.outputs.endpoint
    region: openAiSecondaryLocation
    priority: 2
    weight: 1
    deployments: backendDeployments
    auth: {
      type: 'managed_identity'
    }
  }
]

// GATEWAY_CACHE: cache the chat deployment, embed with the embedding deployment. `dimensions`
// is sent only when it differs from the gateway's default for a deployment embedder (1536).
var cacheBase = {
  deployments: [
    chatDeploymentName
  ]
  embedder: embeddingDeploymentName
  ttl_seconds: cacheTtlSeconds
  vector_index: cacheVectorIndexType
}
var cacheDimensions = (embeddingDimensions == 1536) ? {} : { dimensions: embeddingDimensions }
var cacheConfig = union(cacheBase, cacheDimensions, cacheSettings)

// List prices (global deployments, USD per 1,000 tokens) of the default models; pass `prices` for others.
var defaultPrices = {
  '${chatDeploymentName}': {
    input: json('0.00015')
    output: json('0.0006')
  }
  '${embeddingDeploymentName}': {
    input: json('0.00002')
    output: 0
  }
}

var gatewayBaseSettings = {
  GATEWAY_BACKENDS: string(backends)
  GATEWAY_ADMIN_KEY: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.adminKeySecretUri})'
  GATEWAY_STORAGE__tableServiceUri: storage.outputs.tableEndpoint
  GATEWAY_STORAGE__blobServiceUri: storage.outputs.blobEndpoint
  GATEWAY_PROMPT_LOG: string({ container: promptLogContainerName })
  GATEWAY_STORAGE__credential: 'managedidentity'
  GATEWAY_STORAGE__clientId: identity.outputs.clientId
  GATEWAY_COSMOS__accountEndpoint: cosmos.outputs.endpoint
  GATEWAY_COSMOS__credential: 'managedidentity'
  GATEWAY_COSMOS__clientId: identity.outputs.clientId
  GATEWAY_COSMOS_DATABASE: cosmosDatabaseName
  GATEWAY_COSMOS_CONTAINER: cosmosContainerName
  GATEWAY_PROBE_SCHEDULE: probeSchedule
  GATEWAY_PRICES: string(empty(prices) ? defaultPrices : prices)
  AZURE_CLIENT_ID: identity.outputs.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identity.outputs.clientId}'
}
var cacheSetting = cacheEnabled ? { GATEWAY_CACHE: string(cacheConfig) } : {}
// Managed identity is the stage's default auth: only the endpoint is needed.
var contentSafetyConfig = union({ endpoint: contentSafetyEnabled ? contentSafety.outputs.endpoint : '' }, contentSafetySettings)
var contentSafetySetting = contentSafetyEnabled ? { GATEWAY_CONTENT_SAFETY: string(contentSafetyConfig) } : {}
var entraAudience = empty(gatewayAppClientId) ? gatewayAppIdUri : (empty(gatewayAppIdUri) ? gatewayAppClientId : '${gatewayAppIdUri},${gatewayAppClientId}')
var entraSettings = empty(entraTenantId) ? { GATEWAY_ADMIN_KEY_ENABLED: 'true' } : {
  GATEWAY_ENTRA_TENANT_ID: entraTenantId
  GATEWAY_ENTRA_AUDIENCE: entraAudience
  GATEWAY_ENTRA_ADMIN_ROLE: entraAdminRole
  GATEWAY_ENTRA_READER_ROLE: entraReaderRole
  GATEWAY_ENTRA_REQUIRED_ROLES: entraRequiredRoles
  GATEWAY_ENTRA_JWKS_URL: entraJwksUrl
  GATEWAY_ENTRA_ISSUER: entraIssuers
  GATEWAY_ADMIN_KEY_ENABLED: adminKeyEnabled ? 'true' : 'false'
}
var gatewaySettings = union(gatewayBaseSettings, cacheSetting, contentSafetySetting, entraSettings)

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appSettings: gatewaySettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    publicNetworkAccess: gatewayPublicAccess
    virtualNetworkSubnetId: privateNetworking ? network.outputs.appSubnetId : ''
  }
  // The identity's roles first: the host needs storage at start, and the admin key's
  // Key Vault reference resolves once the app reads its settings.
  dependsOn: [
    rbac
    privateEndpoints
  ]
}

module network './app/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    endpointSubnetPrefix: endpointSubnetPrefix
    privateDnsZoneNames: [for zone in items(privateDnsZones): zone.value]
  }
}

// Every service the gateway calls, by its private endpoint; the gateway's own when callers come from the network.
var serviceEndpoints = [
  {
    name: 'blob'
    id: storage.outputs.id
    group: 'blob'
    zone: privateDnsZones.blob
  }
  {
    name: 'table'
    id: storage.outputs.id
    group: 'table'
    zone: privateDnsZones.table
  }
  {
    name: 'cosmos'
    id: cosmos.outputs.id
    group: 'Sql'
    zone: privateDnsZones.cosmos
  }
  {
    name: 'openai-1'
    id: openAiPrimary.outputs.id
    group: 'account'
    zone: privateDnsZones.openai
  }
  {
    name: 'openai-2'
    id: openAiSecondary.outputs.id
    group: 'account'
    zone: privateDnsZones.openai
  }
  {
    name: 'vault'
    id: keyVault.outputs.id
    group: 'vault'
    zone: privateDnsZones.vault
  }
]
var contentSafetyEndpoints = contentSafetyEnabled ? [
  {
    name: 'contentsafety'
    id: contentSafety.outputs.id
    group: 'account'
    zone: privateDnsZones.cognitive
  }
] : []

// Before the app: its host reaches storage at start, through these endpoints.
module privateEndpoints './app/private-endpoints.bicep' = if (privateNetworking) {
  name: 'private-endpoints'
  scope: rg
  params: {
    namePrefix: '${abbrs.networkPrivateEndpoints}${resourceToken}-'
    location: location
    tags: tags
    subnetId: privateNetworking ? network.outputs.endpointSubnetId : ''
    endpoints: concat(serviceEndpoints, contentSafetyEndpoints)
  }
}

// The gateway's own endpoint, for callers inside the network when its public access is off.
module gatewayEndpoint './app/private-endpoints.bicep' = if (privateNetworking && !publicGatewayAccess) {
  name: 'gateway-endpoint'
  scope: rg
  params: {
    namePrefix: '${abbrs.networkPrivateEndpoints}${resourceToken}-'
    location: location
    tags: tags
    subnetId: privateNetworking ? network.outputs.endpointSubnetId : ''
    endpoints: [
      {
        name: 'api'
        id: api.outputs.id
        group: 'sites'
        zone: privateDnsZones.sites
      }
    ]
  }
}

// azd keeps these in the environment (.azure/<env>/.env); the post-provision hook reads them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output GATEWAY_URL string = api.outputs.uri
output GATEWAY_ADMIN_KEY_SECRET_URI string = keyVault.outputs.adminKeySecretUri
output GATEWAY_CHAT_DEPLOYMENT string = chatDeploymentName
output GATEWAY_EMBEDDING_DEPLOYMENT string = embeddingDeploymentName
output GATEWAY_BACKENDS string = string(backends)
output GATEWAY_CACHE string = cacheEnabled ? string(cacheConfig) : ''
output GATEWAY_PRICES string = string(empty(prices) ? defaultPrices : prices)
output GATEWAY_STORAGE__tableServiceUri string = storage.outputs.tableEndpoint
output GATEWAY_COSMOS__accountEndpoint string = cosmos.outputs.endpoint
output GATEWAY_COSMOS_DATABASE string = cosmosDatabaseName
output GATEWAY_COSMOS_CONTAINER string = cosmosContainerName
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output GATEWAY_WORKBOOK_ID string = monitoring.outputs.workbookId
