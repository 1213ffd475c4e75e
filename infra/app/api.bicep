// The gateway: a Python 3.11 Function App on the Flex Consumption plan, running as the
// user-assigned identity. The gateway's own settings come in `appSettings` (main.bicep);
// this module adds the Functions runtime's identity-based host storage and streaming switch.
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
@description('Settings the gateway reads (shared/catalog.py).')
param appSettings object
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@description('Concurrent HTTP requests (mostly streams) one instance is given; the README\'s capacity section says how it was measured.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 200
@description('Enabled: callers reach the gateway over the internet. Disabled: only through its private endpoint, from the virtual network. Private unless main.bicep says otherwise.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'
@description('Subnet (delegated to Microsoft.App/environments) the app\'s outbound traffic goes through; empty: no virtual network integration.')
param virtualNetworkSubnetId string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Zone redundancy on Flex Consumption is offered in some regions only; the default must deploy in every Flex region. Set zoneRedundant on the plan where it is available
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Settings the Functions runtime reads, not the gateway. On Flex Consumption the worker
// runtime and version live in functionAppConfig.runtime, not in app settings.
var runtimeSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  // HTTP streaming (azurefunctions-extensions-http-fastapi) needs the worker to index at init.
  PYTHON_ENABLE_INIT_INDEXING: '1'
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Callers authenticate with subscription keys; the openai SDK presents no client certificate
  // checkov:skip=CKV_AZURE_212:A minimum instance count (always-ready instances) is billed around the clock; the plan scales from zero on demand to keep the cost at rest at zero
  // checkov:skip=CKV_AZURE_213:App Service health check pings instances every minute, which would keep an instance (and its cost) alive on a plan that scales to zero; GET /health serves external monitors instead
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: publicNetworkAccess
    // Flex Consumption routes all outbound traffic through the integrated subnet: storage, Cosmos DB,
    // Azure OpenAI, Key Vault and Content Safety are then reached at their private endpoints.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // Unset, Flex Consumption gives a Python app one request at a time per instance: every
        // open stream would hold an instance of its own.
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13:This resource is the app settings, not site config. App Service Authentication would turn away the openai SDK's api-key calls: callers authenticate with subscription keys at the gateway
  // checkov:skip=CKV_AZURE_63:This resource is the app settings, not site config; requests are logged to Application Insights, not to App Service's file logs
  // checkov:skip=CKV_AZURE_65:This resource is the app settings, not site config; detailed error pages are an App Service front-end feature, and the gateway answers every error in the OpenAI error envelope
  // checkov:skip=CKV_AZURE_66:This resource is the app settings, not site config; failures are traced in Application Insights
  // checkov:skip=CKV_AZURE_80:This resource is the app settings, not site config, and the app is Python: there is no .NET Framework version
  // checkov:skip=CKV_AZURE_88:This resource is the app settings, not site config; Flex Consumption has no Azure Files content share (the package is in blob storage)
  // checkov:skip=CKV_AZURE_222:This resource is the app settings, not site config: public network access is the site's publicNetworkAccess, checked there
  parent: site
  name: 'appsettings'
  properties: union(appSettings, runtimeSettings)
}

// azd deploys with Entra tokens; publishing with a username and password stays off.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output uri string = 'https://${site.properties.defaultHostName}'
